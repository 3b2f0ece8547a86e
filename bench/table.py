"""The one table scripts/bench prints: a row per measure, a column per target, then ratios."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Results = Mapping[str, Mapping[str, float | None]]  # target -> raw measure -> value

# (numerator, denominator) target pairs shown as ratio columns.
RATIOS: tuple[tuple[str, str], ...] = (
    ("keyrelay", "mitmdump"),
    ("kr+all", "mitmdump"),
    ("mitm+tbl", "mitmdump"),
    ("keyrelay", "mitm+tbl"),
    ("keyrelay", "mitm-st"),
    ("keyrelay", "nginx"),
    ("keyrelay", "fal"),
    ("2kr+lb", "kr+all"),
)


@dataclass(frozen=True)
class Row:
    label: str
    measure: str  # key in Results
    higher_is_better: bool
    added: bool = False  # shown as the difference from the direct column
    digits: int = 1


ROWS: tuple[Row, ...] = (
    Row("POST c1 req/s", "post1_rps", True, digits=0),
    Row("POST c1 p50 ms", "post1_p50", False, added=True, digits=2),
    Row("POST c1 p99 ms", "post1_p99", False, added=True, digits=2),
    Row("POST c1 CPU us/req", "post1_cpu", False, digits=0),
    Row("POST c32 req/s", "post32_rps", True, digits=0),
    Row("POST c32 p50 ms", "post32_p50", False, added=True, digits=2),
    Row("POST c32 p99 ms", "post32_p99", False, added=True, digits=2),
    Row("POST c32 CPU us/req", "post32_cpu", False, digits=0),
    Row("SSE first event, new conn ms", "sse_ttfb", False, added=True, digits=2),
    Row("SSE first event, kept conn ms", "sse_ttfb_kept", False, added=True, digits=2),
    Row("SSE per event p50 ms", "sse_p50", False, added=True, digits=2),
    Row("SSE per event p99 ms", "sse_p99", False, added=True, digits=2),
    Row("upload MB/s", "upload_mbs", True, digits=0),
    Row("download MB/s", "download_mbs", True, digits=0),
    Row("transfer RSS growth MiB", "transfer_rss_mib", False),
    Row("open streams KiB/stream", "streams_kib", False),
    Row("open streams rate held %", "streams_held", True, digits=0),
)


def value(results: Results, target: str, row: Row) -> float | None:
    """The figure shown: raw, or for `added` rows the difference from the direct target."""
    raw = results.get(target, {}).get(row.measure)
    if raw is None or not row.added or target == "direct":
        return raw
    base = results.get("direct", {}).get(row.measure)
    return None if base is None else raw - base


def ratio(results: Results, row: Row, top: str, bottom: str) -> float | None:
    a, b = value(results, top, row), value(results, bottom, row)
    if a is None or b is None or a <= 0 or b <= 0:
        return None  # a ratio of two near-zero additions says nothing
    return a / b


def render(results: Results, targets: list[str]) -> str:
    ratios = [(a, b) for a, b in RATIOS if a in targets and b in targets]
    heads = ["", *targets, *(f"{a}/{b}" for a, b in ratios)]
    lines: list[list[str]] = [heads]
    for row in ROWS:
        cells = [row.label + (" +" if row.added else "")]
        cells += [_fmt(value(results, t, row), row.digits) for t in targets]
        cells += [_fmt(ratio(results, row, a, b), 2, "x") for a, b in ratios]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(heads))]
    out = [
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(line))
        for line in lines
    ]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def _fmt(x: float | None, digits: int, suffix: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}{suffix}"


LEGEND = (
    "Rows marked + show what each proxy adds to the direct column's own figure (the upstream\n"
    "reached without a proxy). Ratios are column/column of the figures shown: for req/s, MB/s\n"
    "and rate held higher is better, for ms, MiB and KiB lower is better. '-' = not measured or\n"
    "not meaningful (a ratio of additions at or below zero)."
)
