"""docs/profiles.md, generated from the built-in profiles: what each opens by default.

    .venv/bin/python -m addon.config.profile_docs > docs/profiles.md

tests/unit/test_docs.py keeps the page equal to what this renders."""

from __future__ import annotations

from typing import Any

from addon.config.operations import Operation
from addon.config.profiles import Profile, builtin_names, load

HEADER = """# Built-in provider profiles

Generated from `addon/profiles/*.yaml` by `python -m addon.config.profile_docs`; a test keeps it
current. Each table lists a profile's operations in the order they are matched (the first that
fits a request is the one it is). **Open** ones are what `allow: [browser]`, the default, opens:
what the browser clients call. Any other opens by naming it in the provider's `allow:` list in
rules.yaml (e.g. `allow: [browser, files.list]`); `allow: ["* api.openai.com/**"]` opens the whole
API (and start-up warns). See [rules.md](rules.md#operations-and-allow) and
[guarding.md](guarding.md#everything-a-caller-creates-is-theirs-ownership).
"""


def render() -> str:
    return HEADER + "".join(_profile(load(name)) for name in builtin_names())


def _profile(profile: Profile) -> str:
    lines = [f"\n## {profile.name}\n"]
    if profile.objects:
        lines.append("\nObjects a caller creates (only they may name them afterwards):\n")
        for spec in profile.objects.values():
            where = ["by a task's `taskUUID`" if _tasks(profile) else "in the operations' paths"]
            if spec.in_paths:
                where = ["anywhere in a path or query"]
            if spec.in_bodies:
                where.append("anywhere in a request body")
            lines.append(
                f"- `{spec.name}`: ids `{spec.form.pattern}`, named {' and '.join(where)}\n"
            )
    if body := _tasks(profile):
        submit = ", ".join(f"`{t}`" for t in body.get("submit", ()))
        lines.append(
            f"\nThe body is a JSON array of tasks, each a `taskType` and a `taskUUID` the client "
            f"chose: {submit} submit a task (creates a `task`), `{body.get('poll')}` polls one; "
            "any other task type is refused, an `authentication` task is taken out.\n"
        )
    lines.append(
        "\n| operation | method and path | kind | open | meter | for |\n|---|---|---|---|---|---|\n"
    )
    for op in profile.operations:
        creates = f" (creates a `{op.creates}`)" if op.creates else ""
        pattern = op.pattern.text.replace("|", "\\|")
        opened = "yes" if op.browser else ""
        lines.append(
            f"| `{op.name}` | `{pattern}` | {op.kind} | {opened} | {_meter(op)} | "
            f"{op.purpose}{creates} |\n"
        )
    return "".join(lines)


def _tasks(profile: Profile) -> dict[str, Any] | None:
    """The profile's `body:` when its bodies are arrays of tasks (Runware)."""
    body = profile.entry.get("body")
    return body if isinstance(body, dict) and body.get("form") == "tasks" else None


def _meter(op: Operation) -> str:
    """How a budget prices it: unpriced (refused under a budget) where it names no meter."""
    if op.meter is None:
        return "unpriced"
    notes = []
    if op.output_cap:
        notes.append(f"sent `{op.output_cap}` if it names none")
    if op.tools_prompt:
        notes.append(f"{op.tools_prompt} input tokens more with tools")
    if op.meter == "session" and op.protocol != "openai-realtime":
        notes.append(f"`{op.protocol}` messages")
    if op.reserve is not None and op.meter == "session":
        notes.append(f"a response billed up to {op.reserve:g} input tokens")
    elif op.reserve is not None:
        notes.append(f"{op.reserve:g} if it names none")
    return op.meter + (f" ({'; '.join(notes)})" if notes else "")


if __name__ == "__main__":
    print(render(), end="")
