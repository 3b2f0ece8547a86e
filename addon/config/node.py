"""Typed, located access to parsed YAML, so every configuration error names file, key and reason."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, NoReturn


class ConfigError(ValueError):
    """A configuration mistake; str() is 'FILE: KEY: reason'."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key or '(top level)'}: {reason}")


_MISSING: Any = object()


class Node:
    """A mapping read from a config file. Reading a key marks it used; `finish` rejects the rest."""

    def __init__(self, value: Any, file: str, path: str = "") -> None:
        if not isinstance(value, dict):
            raise ConfigError(file, path, f"must be a mapping, not {_kind(value)}")
        self.value: dict[str, Any] = value
        self.file = file
        self.path = path
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, reason: str, name: str | None = None) -> NoReturn:
        raise ConfigError(self.file, self.key(name) if name else self.path, reason)

    def __contains__(self, name: str) -> bool:
        return name in self.value

    def names(self) -> Iterator[str]:
        return iter(self.value)

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._used.add(name)
        if name not in self.value or self.value[name] is None:
            if default is _MISSING:
                self.fail("is required", name)
            return default
        return self.value[name]

    def text(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(name, str, "a string", default)

    def flag(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(name, bool, "true or false", default)

    def integer(self, name: str, default: Any = _MISSING, minimum: int = 0) -> Any:
        value = self._typed(name, int, "a whole number", default)
        if isinstance(value, int) and value < minimum:
            self.fail(f"must be at least {minimum}", name)
        return value

    def number(self, name: str, default: Any = _MISSING, minimum: float = 0) -> Any:
        value = self.raw(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"must be a number, not {_kind(value)}", name)
        if value < minimum:
            self.fail(f"must be at least {minimum}", name)
        return float(value)

    def texts(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if value is default:
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.fail("must be a list of strings", name)
        return tuple(value)

    def networks(self, name: str) -> tuple[IPv4Network | IPv6Network, ...]:
        """A list of addresses or networks (CIDR), each located when it is neither."""
        found = []
        for i, text in enumerate(self.texts(name, ())):
            try:
                found.append(ip_network(text.strip(), strict=False))
            except ValueError:
                self.fail("is not an address or a network (CIDR)", f"{name}[{i}]")
        return tuple(found)

    def text_map(self, name: str) -> dict[str, str]:
        value = self.raw(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) for k, v in value.items()
        ):
            self.fail("must be a mapping of names to strings", name)
        return {k: str(v) for k, v in value.items()}

    def child(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if value is default:
            return value
        return Node(value, self.file, self.key(name))

    def finish(self) -> None:
        unknown = sorted(set(self.value) - self._used)
        if unknown:
            self.fail("unknown key", unknown[0])

    def _typed(self, name: str, kind: type, label: str, default: Any) -> Any:
        value = self.raw(name, default)
        if value is not default and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            self.fail(f"must be {label}, not {_kind(value)}", name)
        return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
