"""Run the real keyrelay (scripts/_mitm mitmdump ...) as a subprocess wired to the fake upstream.

mitmdump prints, on stdout, one line per listening server, e.g.
    [06:30:44.461] reverse proxy to http://keyrelay.invalid listening at 127.0.0.1:37871.
and that line is how we learn the port chosen for --listen-port 0. It is printed as soon as the
socket is bound, before mitmdump checks for errors logged during start-up (a failing addon or
option): then it prints "Error logged during startup, exiting..." to stderr and exits 1. So
after the line, start() also waits for one HTTP answer and checks the process is still alive.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self

from .lifecycle import StartStop
from .tls import PROVIDER_HOSTS

REPO = Path(__file__).resolve().parents[2]
MITM_SCRIPT = REPO / "scripts" / "_mitm"
DEFAULT_RULES = REPO / "rules.yaml"

# Recognisable, distinct values (none is a substring of another) that tests grep for in logs.
TEST_KEYS: dict[str, str] = {
    "ANTHROPIC_API_KEY": "test-anthropic-key-4f1c9a7e",
    "OPENAI_API_KEY": "test-openai-key-b82d03c5",
    "ELEVENLABS_API_KEY": "test-elevenlabs-key-6e57a1d9",
    "FAL_KEY": "test-fal-key-id-0c3b:test-fal-key-secret-9d7e",
    "INFERENCE_API_KEY": "test-inference-key-a4f6e210",
    "GEMINI_API_KEY": "test-gemini-key-7d2e91b4",
    "EACHLABS_API_KEY": "test-eachlabs-key-5b0c83fe",
    "RUNWARE_API_KEY": "test-runware-key-9e1d4c27",
}
PROVIDER_KEY_VARS: tuple[str, ...] = (
    *TEST_KEYS,
    "FAL_KEY_ID",
    "FAL_KEY_SECRET",
)

LISTENING_RE = re.compile(r"listening at (?:\[(?P<v6>[^\]]+)\]|(?P<host>[^\s:]+)):(?P<port>\d+)\.")
_INSTALLING = "installing Python dependencies"  # scripts/_env.sh's pip step can take minutes
_SECRET_SUFFIXES = ("_API_KEY", "_KEY", "_KEY_ID", "_KEY_SECRET", "_SECRET", "_TOKEN")
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def child_environment(
    keys: Mapping[str, str] | None = None, env: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """The parent's environment minus anything that may be a real credential, plus test keys.

    keys replaces TEST_KEYS when given; env is applied last, a None value removes a variable."""
    child = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().endswith(_SECRET_SUFFIXES)
        and k not in PROVIDER_KEY_VARS
        and not k.startswith(("KEYRELAY_", "MITMPROXY_"))
        and k.lower() not in _PROXY_VARS
        and k != "SSLKEYLOGFILE"
    }
    child.update(TEST_KEYS if keys is None else keys)
    child["PYTHONUNBUFFERED"] = "1"
    for k, v in (env or {}).items():
        if v is None:
            child.pop(k, None)
        else:
            child[k] = v
    return child


class ProxyStartError(RuntimeError):
    pass


class KeyrelayProcess(StartStop):
    """One mitmdump process running keyrelay on 127.0.0.1 with a port chosen by the kernel.

    Without rules_text/rules_path the repo's rules.yaml is copied into the work directory, so a
    developer's real `.env` beside the repo's rules file is never read during tests.
    """

    def __init__(
        self,
        *,
        upstream_port: int,
        ca_file: Path,
        workdir: Path | None = None,
        rules_text: str | None = None,
        rules_path: Path | None = None,
        keys: Mapping[str, str] | None = None,
        env: Mapping[str, str | None] | None = None,
        extra_args: Sequence[str] = (),
        hosts: Iterable[str] = PROVIDER_HOSTS,
        upstream_host: str = "127.0.0.1",
        command: Sequence[str] | None = None,
        startup_timeout: float = 30.0,
        ready_path: str = "/_keyrelay/health",
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="keyrelay-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.confdir = self.workdir / "mitmproxy"
        self.rules_path: Path | None = None
        if rules_text is not None:
            self.rules_path = self.workdir / "rules.yaml"
            self.rules_path.write_text(rules_text)
        elif rules_path is not None:
            self.rules_path = rules_path
        elif DEFAULT_RULES.exists():
            self.rules_path = self.workdir / "rules.yaml"
            shutil.copyfile(DEFAULT_RULES, self.rules_path)
        self.env = child_environment(keys, env)
        self.command = list(command or [str(MITM_SCRIPT), "mitmdump"])
        self.args = [
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
            "--set",
            f"confdir={self.confdir}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={ca_file}",
        ]
        if self.rules_path is not None:
            self.args += ["--set", f"keyrelay_rules={self.rules_path}"]
        for h in hosts:
            self.args += ["--set", f"keyrelay_connect_to={h}:443={upstream_host}:{upstream_port}"]
        fast = os.environ.get("KEYRELAY_TEST_FAST_DISPATCH")  # "false": mitmproxy's dispatch
        if fast and command is None and not any("fast_dispatch" in a for a in extra_args):
            self.args += ["--set", f"keyrelay_fast_dispatch={fast}"]
            self.args += ["--set", f"keyrelay_fast_paths={fast}"]  # false: mitmproxy's engine as is
        self.args += list(extra_args)
        self.startup_timeout = startup_timeout
        self.ready_path = ready_path
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._out: list[str] = []
        self._out_cond = threading.Condition()
        self.checkpoint = 0  # set by the `keyrelay` fixture at each test's start

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        assert self._proc is None, "already started"
        self._proc = subprocess.Popen(
            [*self.command, *self.args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream keeps log lines and tracebacks in order
            start_new_session=True,  # its own group, so stop() can reach a pip child too
        )
        _live.add(self)
        self._reader = threading.Thread(
            target=self._read_output, name=f"keyrelay-out-{self._proc.pid}", daemon=True
        )
        self._reader.start()
        try:
            self.port = self._wait_for_port()
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL to the process group after timeout. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if self._reader:
            self._reader.join(timeout)
        _live.discard(self)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return proc.returncode

    # -- inspection ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output(self, since: int = 0) -> str:
        """Everything mitmdump printed (stdout and stderr), from offset `since` (see mark())."""
        with self._out_cond:
            return "".join(self._out)[since:]

    def recent_output(self) -> str:
        """Output since `checkpoint`: with the `keyrelay` fixture, what the current test caused."""
        return self.output(self.checkpoint)

    def mark(self) -> int:
        """The current end of output(), to read only what a test caused: output(since=mark)."""
        with self._out_cond:
            return sum(map(len, self._out))

    def wait_for_output(
        self, pattern: str | re.Pattern[str], timeout: float = 5.0, since: int = 0
    ) -> re.Match[str]:
        """Block until pattern (a regex) matches output(since); AssertionError with the output
        on timeout. Log lines come from another process, so they may trail the HTTP answer."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._out_cond:
            while True:
                if m := rx.search("".join(self._out)[since:]):
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or (self._reader is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{rx.pattern!r} not in keyrelay output:\n{self.output(since)}"
                    )
                self._out_cond.wait(left)

    def describe(self) -> str:
        """Command line and output, for failure messages."""
        return (
            f"command: {[*self.command, *self.args]}\nexit code: {self.returncode}\n"
            f"output:\n{self.output()}"
        )

    # -- internals -----------------------------------------------------------------------------
    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in iter(self._proc.stdout.readline, b""):
            with self._out_cond:
                self._out.append(raw.decode("utf-8", "replace"))
                self._out_cond.notify_all()
        with self._out_cond:
            self._out_cond.notify_all()

    def _wait_for_port(self) -> int:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        extended = False
        with self._out_cond:
            while True:
                text = "".join(self._out)
                if m := LISTENING_RE.search(text):
                    return int(m["port"])
                if not extended and _INSTALLING in text:
                    deadline += 600
                    extended = True
                if self._proc.poll() is not None and not self._reader_alive():
                    raise ProxyStartError(f"keyrelay exited during start-up\n{self.describe()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProxyStartError(
                        f"keyrelay did not print its listening address within "
                        f"{self.startup_timeout}s\n{self.describe()}"
                    )
                self._out_cond.wait(min(left, 0.2))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def _wait_until_serving(self) -> None:
        """One HTTP answer of any status proves the event loop is up; then the process must
        still be running (mitmdump exits right after binding if start-up logged an error)."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while self.alive():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", self.ready_path)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException) as e:
                last_error = e
            else:
                if self.alive():
                    return
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise ProxyStartError(
                    f"keyrelay did not answer on port {self.port} ({last_error!r})\n"
                    f"{self.describe()}"
                )
            time.sleep(0.05)
        if self._reader:
            self._reader.join(5)  # so the message has the whole output
        raise ProxyStartError(f"keyrelay exited during start-up\n{self.describe()}")


_live: set[KeyrelayProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    # A fixture's teardown may never run (e.g. pytest killed by a signal it handles): no orphans.
    for proc in list(_live):
        proc.stop(timeout=3)
