"""Case-insensitive header lookup over a list of (name, value) pairs kept exactly as received."""

from __future__ import annotations


class HeaderLookup:
    """Mixin for a record with `headers` as received (names in their case, duplicates kept)."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitively, or None."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]
