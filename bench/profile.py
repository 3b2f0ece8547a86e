"""Where keyrelay's time goes under load: py-spy samples the proxy while wrk drives it.

Prints the functions with the most samples on top of the stack (self time), and the share of
all samples spent inside keyrelay's own code (any frame under addon/) with its costliest
functions counted inclusively, so the addon's cost can be told apart from mitmproxy's.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

from bench import load
from bench.setting import REPO
from bench.targets import Target

TOP = 15
# Self time here is calling addons: finding hooks, safecall's context manager, or the table
# (addon/dispatch.py) that replaces them. The table is not keyrelay's own work: every hook
# runs under it, so it is left out of the "inside keyrelay" share.
DISPATCH = (
    "mitmproxy/addonmanager.py:",
    "mitmproxy/hooks.py:",
    "contextlib.py:",
    "addon/dispatch.py:",
)


# The engine's own steps made faster (header lookups, option reads, hook arguments): the engine
# calls them as much without keyrelay, so they are not keyrelay's own work; under a keyrelay
# frame (keyrelay looking a header up) that frame counts the sample already.
ENGINE = ("addon/dispatch.py:", "addon/fast_paths.py:")


# keyrelay's wrappers around mitmproxy's own HTTP/1 reading and writing (transport/head_limit.py,
# transport/h1_framing.py): what runs under them is the engine's work, which bare mitmdump does
# too, so they do not count as keyrelay's own either (their few checks are in the noise).
WRAPPERS = ("addon/transport/head_limit.py:read_headers", "addon/transport/h1_framing.py:send")


def run(target: Target, seconds: float) -> str:
    py_spy = shutil.which("py-spy") or str(REPO / ".venv/bin/py-spy")
    if not Path(py_spy).exists():
        return "profile: py-spy is not installed (scripts/bench --profile installs it)"
    out = Path(target.procs[0].log).with_name(f"profile-{target.key}.txt")
    pid = str(target.memory_pids()[0])
    driver = threading.Thread(target=load.wrk_post, args=(target, 32, seconds + 2), daemon=True)
    driver.start()
    # --gil: only samples holding the GIL, i.e. Python CPU time (idle threads excluded).
    argv = [py_spy, "record", "-p", pid, "-d", str(int(seconds)), "-r", "250", "-f", "raw", "--gil"]
    done = subprocess.run([*argv, "-o", str(out)], capture_output=True, text=True)
    driver.join()
    if done.returncode or not out.exists():
        return f"profile: py-spy failed: {done.stderr.strip()[-500:]}"
    return summarize(out.read_text(), target.key)


def summarize(collapsed: str, name: str) -> str:
    """Self and inclusive sample counts from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = in_addon = dispatch = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        dispatching = {f for f in frames if f.startswith(ENGINE)}
        wrapped = [frames.index(w) for w in WRAPPERS if w in frames]
        ours = frames[: min(wrapped)] if wrapped else frames  # without the engine's work
        total += count
        own[frames[-1]] += count
        if frames[-1].startswith(DISPATCH):
            dispatch += count
        addon_frames = {f for f in ours if f.startswith("addon/") and f not in dispatching}
        if addon_frames:
            in_addon += count
        for frame in addon_frames:
            inclusive[frame] += count
    if not total:
        return "profile: no samples"
    lines = [f"profile of {name} under wrk -c32 ({total} samples):"]
    lines.append(f"  inside keyrelay's addon code: {100 * in_addon / total:.1f}% of samples")
    lines.append(f"  mitmproxy's hook dispatch (self time): {100 * dispatch / total:.1f}%")
    lines += [f"  {100 * n / total:5.1f}% incl  {f}" for f, n in inclusive.most_common(TOP)]
    lines.append("  top self time (any code):")
    lines += [f"  {100 * n / total:5.1f}% self  {f}" for f, n in own.most_common(TOP)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'func (/long/path/site-packages/mitmproxy/x.py:12)' -> 'mitmproxy/x.py:func'."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{REPO}/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{func}"
