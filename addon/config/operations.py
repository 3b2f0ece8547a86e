"""Operations and objects: what a provider's API does, named by method and path. Pure config.

An operation pattern reads `METHODS host/path`:
- METHODS is one method (`GET`), several (`GET|HEAD`) or `*` (any);
- the host is a name, a label may be `*`;
- path segments are literal (case and all: the provider reads them so), `*` (one non-empty
  segment), `*:verb` (one segment ending in a custom method, as Google writes them:
  `models/*:generateContent`; the part before `:verb` holds no `:`), `{object}` (one segment
  that names an object of that type, e.g. `{response}`), or `**` (anything, including nothing;
  `/**` at the end also matches the path without it).

The query is not part of an operation: ownership (addon/jobs/) reads it for ids instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args
from urllib.parse import unquote

from pydantic import Field

from addon.config.model import (
    TEXT,
    Flag,
    Number,
    Positive,
    Text,
    Texts,
    Where,
    Whole,
    fail,
    from_text,
    section,
)

Kind = Literal[
    "generate",
    "stream",
    "upload",
    "submit",
    "poll",
    "result",
    "cancel",
    "delete",
    "list",
    "read",
    "account",
    "admin",
    "mint-credential",
    "call",  # a call whose media then flows between the browser and the provider (WebRTC)
]
KINDS: tuple[str, ...] = get_args(Kind)
# How a call is metered under a budget (addon/budget/): what its answer says it used, priced by
# the provider's `prices:`. `free`: costs nothing. An operation with none cannot be priced: under
# a budget it is refused (403 unpriced), never free. `session`: a WebSocket session whose
# messages report each response's usage (OpenAI Realtime: addon/metering/realtime.py).
# `minutes`: a minted credential, by the minutes it can be spent (addon/guard/mints.py).
Meter = Literal["tokens", "characters", "units", "images", "seconds", "session", "minutes", "free"]
METERS: tuple[str, ...] = get_args(Meter)
# What a `meter: session` WebSocket's messages speak, so how they are metered (addon/budget/):
# OpenAI Realtime's response usage (the default), Gemini Live's usageMetadata, or the characters
# an ElevenLabs text-to-speech `stream-input` client sends.
SessionProtocol = Literal["openai-realtime", "gemini-live", "elevenlabs-stream-input"]
ANY_METHOD = "*"
_METHOD = re.compile(r"[A-Z]+")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?|\*")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;=:@%]+")
_CUSTOM_METHOD = re.compile(r"\*(:[A-Za-z][A-Za-z0-9]*)")  # `*:generateContent`


class OperationError(ValueError):
    """A malformed operation pattern; the message says how to write it."""


@dataclass(frozen=True, slots=True)
class OperationPattern:
    text: str
    methods: frozenset[str] | None  # None: any method
    host: str  # the host as written (lower-case), for messages and the host check
    regex: re.Pattern[str]  # host + path, with a named group per placeholder
    placeholders: tuple[str, ...]  # object types, in path order
    loose: re.Pattern[str]  # `regex` without case, for `resembles`
    opens_everything: bool  # `* host/**` (or `* host/v1/**`): every call the key can make there

    def host_matches(self, host: str) -> bool:
        return _host_regex(self.host).fullmatch(host) is not None

    def match(self, method: str, host: str, path: str) -> dict[str, str] | None:
        """The placeholders' segments when the request is this operation, else None.
        `path` has no query."""
        return self._groups(self.regex, method, f"{host}{path}")

    def resembles(self, method: str, host: str, loose_path: str) -> dict[str, str] | None:
        """Like `match`, without case, on a path with parameters and empty segments dropped
        (`loosen`): what a lenient server might take for this operation."""
        return self._groups(self.loose, method, f"{host}{loose_path}")

    def _groups(self, regex: re.Pattern[str], method: str, subject: str) -> dict[str, str] | None:
        if self.methods is not None and method not in self.methods:
            return None
        found = regex.fullmatch(subject)
        return None if found is None else found.groupdict()


def loosen(path: str) -> str:
    """`/A//requests;v=1/X/` -> `/A/requests/X`: forms a lenient server may read alike."""
    return "/" + "/".join(s.split(";")[0] for s in path.split("/") if s.split(";")[0])


def compile_operation(text: str) -> OperationPattern:
    method_part, space, rest = text.strip().partition(" ")
    rest = rest.strip()
    if not space or not rest:
        raise OperationError(
            f"'{text}' names no method: write 'POST {text}' (or '* {text}' for every method)"
        )
    if method_part == ANY_METHOD:
        methods = None
    else:
        names = method_part.split("|")
        if not all(_METHOD.fullmatch(m) for m in names):
            raise OperationError(f"'{method_part}' is not a method, 'GET|HEAD' list or '*'")
        methods = frozenset(names)
    if "://" in rest:
        if not rest.lower().startswith("https://"):
            raise OperationError("only https upstreams are reached, so this cannot match")
        rest = rest[8:]
    if "?" in rest or "#" in rest:
        raise OperationError("an operation is a method, a host and a path: no query or fragment")
    host, slash, path = rest.partition("/")
    host = host.lower().rstrip(".")
    if not slash:
        raise OperationError(f"'{rest}' needs a path, e.g. '{rest}/**'")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise OperationError(f"'{host}' is not a host name pattern")
    regex, placeholders = _path_regex(path.split("/"))
    whole = _host_regex(host).pattern + regex
    return OperationPattern(
        text=text.strip(),
        methods=methods,
        host=host,
        regex=re.compile(whole),
        placeholders=placeholders,
        loose=re.compile(whole, re.IGNORECASE),
        opens_everything=methods is None and path.count("/") <= 1 and path.endswith("**"),
    )


def _path_regex(segments: list[str]) -> tuple[str, tuple[str, ...]]:
    parts: list[str] = []
    placeholders: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append("(?:/.*)?" if last else "/.*")
        elif segment == "*":
            parts.append("/[^/]+")
        elif (verb := _CUSTOM_METHOD.fullmatch(segment)) is not None:
            parts.append("/[^/:]+" + re.escape(verb[1]))
        elif (found := _PLACEHOLDER.fullmatch(segment)) is not None:
            name = found[1]
            if name in placeholders:
                raise OperationError(f"'{{{name}}}' stands twice in one path")
            placeholders.append(name)
            parts.append(f"/(?P<{name}>[^/]+)")
        elif segment == "" and last:
            parts.append("/")
        elif _LITERAL.fullmatch(segment) and segment not in (".", ".."):
            parts.append("/" + re.escape(segment))
        else:
            raise OperationError(
                f"'{segment}' is not a path segment: a literal, '*', '*:verb', '**' or '{{object}}'"
            )
    return "".join(parts), tuple(placeholders)


_HOSTS: dict[str, re.Pattern[str]] = {}


def _host_regex(host: str) -> re.Pattern[str]:
    regex = _HOSTS.get(host)
    if regex is None:
        labels = host.split(".")
        text = r"\.".join("[a-z0-9-]+" if x == "*" else re.escape(x) for x in labels)
        regex = _HOSTS[host] = re.compile(text)
    return regex


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """Something a caller creates and later names: a response, a file, a queued job."""

    name: str
    scope: str  # the profile (or provider) whose namespace the ids live in
    form: re.Pattern[str]  # what an id looks like; anything else names no object
    in_answer: tuple[str, ...]  # where a creating call's answer has the id: "a.b" or "header:x"
    in_bodies: bool = False  # any JSON string of this form in a request body names one
    in_paths: bool = False  # any path segment or query value of this form names one

    def key(self, object_id: str) -> str:
        return f"{self.scope}.{self.name}:{object_id}"

    def fits(self, text: str) -> bool:
        """Whether `text` is an id of this object's form (ids compare without case)."""
        form = self.form
        return form.fullmatch(text) is not None or form.fullmatch(text.lower()) is not None


@section
class MintSpec:
    """What the body of a call that mints a credential (`kind: mint-credential`) names: the
    model the key may use and how long the key lives (addon/guard/mints.py checks both). Paths
    are dotted (`session.model`); the first that is present counts."""

    lifetime: Positive  # seconds the key lives when the request names none (the provider's)
    model: Texts = ()  # where the body names the model (or agent) the key is for
    expires: Text | None = None  # where it names the key's lifetime, in seconds...
    expires_at: Text | None = None  # ...or its expiry, as an RFC 3339 time (Google's)
    session: Whole = 0  # seconds one session the key starts may last beyond the key's expiry

    def __post_init__(self) -> None:
        if self.expires and self.expires_at:
            fail("give expires or expires_at, not both", "expires_at")


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    pattern: OperationPattern
    kind: Kind
    purpose: str  # what the clients use it for (docs, refusals)
    browser: bool  # allowed by default: a browser client calls it
    creates: str | None = None  # the object type its answer creates
    creates_if: str | None = None  # ...only when this top-level body field is true (`store`)
    meter: Meter | None = None  # how a budget prices it; None: it cannot be priced
    # In the meter's unit, when the request names no count; for `session`, the input tokens
    # one response may be billed at most (the model's context window).
    reserve: float | None = None
    protocol: SessionProtocol = "openai-realtime"  # a `meter: session`'s messages
    # The body field the provider reads as its output cap: under a budget, a request that names
    # none is sent with the cap its reservation assumed (the provider's default may be higher).
    output_cap: str | None = None
    tools_prompt: int = 0  # input tokens the provider adds when a request offers tools
    clients: tuple[str, ...] = ()  # which clients call it (docs)
    mint: MintSpec | None = None  # a credential it mints: its model and lifetime are checked

    def match(self, method: str, host: str, path: str) -> dict[str, str] | None:
        return self.pattern.match(method, host, path)


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One `allow:` entry: an operation of the profile by name, or a pattern of its own."""

    text: str
    pattern: OperationPattern
    operation: str | None = None


@dataclass(frozen=True, slots=True)
class Catalogue:
    """A provider's operations (first match wins), its objects, and what `allow:` opens."""

    operations: tuple[Operation, ...] = ()
    objects: dict[str, ObjectSpec] = field(default_factory=dict)
    allow: tuple[AllowRule, ...] = ()
    profile: str | None = None
    # Derived once: the operations that name objects, and one pattern for the ids that count
    # in paths and one for those in bodies (a string is tried once, not once per object).
    naming: tuple[Operation, ...] = field(init=False, repr=False, compare=False)
    path_ids: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    body_ids: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        naming = tuple(o for o in self.operations if o.pattern.placeholders)
        object.__setattr__(self, "naming", naming)
        objects = self.objects.values()
        object.__setattr__(self, "path_ids", _any_of([o for o in objects if o.in_paths]))
        object.__setattr__(self, "body_ids", _any_of([o for o in objects if o.in_bodies]))

    def operation(self, method: str, host: str, path: str) -> Operation | None:
        """The first operation the request is. A placeholder takes only an id of its object's
        form: `GET /v1/videos/characters` is not `videos.get` with the id `characters`."""
        for operation in self.operations:
            found = operation.match(method, host, path)
            if found is not None and all(
                self.objects[kind].fits(unquote(value)) for kind, value in found.items()
            ):
                return operation
        return None

    def allows(self, method: str, host: str, path: str, operation: Operation | None) -> bool:
        """An operation the profile knows is open when `allow:` names it, or when a pattern of
        `allow:`'s own covers the request: `tasks.get` never opens `GET tasks/list`, which the
        profile knows as `tasks.list`, though its pattern would fit."""
        for rule in self.allow:
            if rule.operation is not None:
                if operation is not None and rule.operation == operation.name:
                    return True
            elif rule.pattern.match(method, host, path) is not None:
                return True
        return False

    def knows_host(self, host: str) -> bool:
        return any(rule.pattern.host_matches(host) for rule in self.allow)


def _any_of(specs: list[ObjectSpec]) -> re.Pattern[str] | None:
    if not specs:
        return None
    return re.compile("|".join(f"(?:{s.form.pattern})" for s in specs), re.IGNORECASE)


BROWSER = "browser"  # the `allow:` entry that stands for the profile's browser operations


def _id_form(text: str) -> re.Pattern[str]:
    try:
        form = re.compile(text)
    except re.error as e:
        fail(f"is not a regular expression: {e}")
    if form.fullmatch("") is not None:
        fail("must not match an empty id")
    return form


@section
class ObjectEntry:
    """One of `objects:` as a profile (or rules.yaml) writes it."""

    id: Annotated[re.Pattern[str], from_text(_id_form, quote=False), TEXT]
    in_answer: Texts
    in_bodies: Flag = False
    in_paths: Flag = False


@section
class OperationEntry:
    """One of `operations:` as a profile (or rules.yaml) writes it."""

    op: Annotated[OperationPattern, from_text(compile_operation, quote=False), TEXT]
    kind: Kind
    purpose: Text = Field("", alias="for")
    browser: Flag = False
    creates: Text | None = None
    creates_if: Text | None = None
    meter: Meter | None = None
    reserve: Annotated[Number, Field(gt=0)] | None = None
    protocol: SessionProtocol | None = None
    output_cap: Text | None = None
    tools_prompt: Whole = 0
    clients: Texts = ()
    mint: MintSpec | None = None

    def __post_init__(self) -> None:
        if self.mint is not None and self.kind != "mint-credential":
            fail("for `kind: mint-credential` only", "mint")
        if self.meter == "minutes" and self.mint is None:
            fail("`meter: minutes` prices a minted credential's lifetime: it needs mint", "meter")
        if self.creates_if is not None and self.creates is None:
            fail("only applies with creates", "creates_if")
        for name in ("output_cap", "tools_prompt"):
            if getattr(self, name) and self.meter != "tokens":
                fail("for `meter: tokens` only", name)
        if self.protocol is not None and self.meter != "session":
            fail("for `meter: session` only", "protocol")
        if self.reserve is not None and self.meter not in ("seconds", "session"):
            fail(
                "a positive number: seconds for `meter: seconds`, the input tokens one response "
                "may be billed for `meter: session`",
                "reserve",
            )


def build_objects(
    entries: dict[str, ObjectEntry], scope: str, where: Where
) -> dict[str, ObjectSpec]:
    objects: dict[str, ObjectSpec] = {}
    for name, entry in entries.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            where.fail("an object type is lower-case letters, digits and '_'", name)
        objects[name] = ObjectSpec(
            name, scope, entry.id, entry.in_answer, entry.in_bodies, entry.in_paths
        )
    return objects


def build_operations(
    entries: dict[str, OperationEntry], objects: dict[str, ObjectSpec], where: Where
) -> tuple[Operation, ...]:
    operations: list[Operation] = []
    for name, entry in entries.items():
        if not _NAME.fullmatch(name):
            where.fail("an operation name looks like 'responses.get'", name)
        for placeholder in entry.op.placeholders:
            if placeholder not in objects:
                where.fail(
                    f"'{{{placeholder}}}' is not an object type of this provider", f"{name}.op"
                )
        if entry.creates is not None and entry.creates not in objects:
            where.fail(
                f"'{entry.creates}' is not an object type of this provider", f"{name}.creates"
            )
        operations.append(
            Operation(
                name=name,
                pattern=entry.op,
                kind=entry.kind,
                purpose=entry.purpose,
                browser=entry.browser,
                creates=entry.creates,
                creates_if=entry.creates_if,
                meter=entry.meter,
                reserve=entry.reserve,
                protocol=entry.protocol or "openai-realtime",
                output_cap=entry.output_cap,
                tools_prompt=entry.tools_prompt,
                clients=entry.clients,
                mint=entry.mint,
            )
        )
    return tuple(operations)


def build_allow(
    entries: tuple[str, ...],
    operations: tuple[Operation, ...],
    upstream_host: str | None,
    where: Where,
) -> tuple[AllowRule, ...]:
    """`allow:` entries: `browser`, an operation's name, or `METHODS host/path`. A provider
    with one upstream (`upstream_host`) takes from `browser` the operations on that host."""
    by_name = {o.name: o for o in operations}
    rules: list[AllowRule] = []
    for i, entry in enumerate(entries):
        text = entry.strip()
        if text == BROWSER:
            rules += [
                AllowRule(o.name, o.pattern, o.name)
                for o in operations
                if o.browser and (upstream_host is None or o.pattern.host_matches(upstream_host))
            ]
            continue
        if (operation := by_name.get(text)) is not None:
            rule = AllowRule(text, operation.pattern, operation.name)
        else:
            try:
                rule = AllowRule(text, compile_operation(text))
            except OperationError as e:
                known = "" if " " in text else " (or an operation name, or 'browser')"
                where.fail(f"{e}{known}", f"[{i}]")
        if upstream_host is not None and not rule.pattern.host_matches(upstream_host):
            shown = f" ({rule.pattern.text})" if rule.operation else ""
            where.fail(
                f"'{text}'{shown} can never match the upstream host {upstream_host}", f"[{i}]"
            )
        rules.append(rule)
    return tuple(rules)
