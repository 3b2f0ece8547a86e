"""Shared fixtures: a test CA, the fake provider upstream and a running keyrelay wired to it.

One upstream and one keyrelay serve the whole session (starting mitmdump takes most of a
second); the function-scoped `upstream` and `keyrelay` fixtures reset what a test can see.
Upstream connection ids keep counting across tests, so compare them with each other only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.client import HttpClient
from support.proxy import TEST_KEYS as _TEST_KEYS
from support.proxy import KeyrelayProcess
from support.tls import PROVIDER_HOSTS, TlsMaterial, make_test_ca
from support.upstream import UpstreamServer
from xdist.scheduler import LoadFileScheduling


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """CA + server certificate for every provider host and localhost, in a session tmp dir."""
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def TEST_KEYS() -> dict[str, str]:
    """The provider keys every keyrelay started by these fixtures gets (a copy)."""
    return dict(_TEST_KEYS)


@pytest.fixture(scope="session")
def upstream_server(test_ca: TlsMaterial) -> Iterator[UpstreamServer]:
    with UpstreamServer(test_ca) as server:
        yield server


@pytest.fixture
def upstream(upstream_server: UpstreamServer) -> Iterator[UpstreamServer]:
    """The session's fake provider with no routes (echo default) and no recorded requests.

    Fails the test at teardown if a handler raised or a request could not be parsed."""
    upstream_server.reset()
    yield upstream_server
    errors = upstream_server.errors
    upstream_server.reset()
    if errors:
        pytest.fail("upstream handler errors:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def keyrelay_session(
    upstream_server: UpstreamServer,
    test_ca: TlsMaterial,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KeyrelayProcess]:
    proc = KeyrelayProcess(
        upstream_port=upstream_server.port,
        ca_file=test_ca.ca_cert,
        workdir=tmp_path_factory.mktemp("keyrelay"),
    )
    with proc:
        yield proc


@pytest.fixture
def keyrelay(keyrelay_session: KeyrelayProcess, upstream: UpstreamServer) -> KeyrelayProcess:
    """The session's keyrelay (default rules, TEST_KEYS), with the upstream reset for this test.

    `keyrelay.checkpoint` marks where this test's output starts: see recent_output()."""
    if not keyrelay_session.alive():
        pytest.fail(f"keyrelay is no longer running\n{keyrelay_session.describe()}", pytrace=False)
    keyrelay_session.checkpoint = keyrelay_session.mark()
    return keyrelay_session


class KeyrelayFactory:
    """Starts extra keyrelay instances for one test; all are stopped at its end."""

    def __init__(self, upstream: UpstreamServer, tls: TlsMaterial, tmp_path: Path) -> None:
        self._upstream, self._tls, self._tmp = upstream, tls, tmp_path
        self.started: list[KeyrelayProcess] = []

    def __call__(
        self,
        rules_text: str | None = None,
        *,
        rules_path: Path | None = None,
        keys: Mapping[str, str] | None = None,
        env: Mapping[str, str | None] | None = None,
        extra_args: Sequence[str] = (),
        hosts: Sequence[str] = PROVIDER_HOSTS,
        upstream_port: int | None = None,
        command: Sequence[str] | None = None,
        startup_timeout: float = 30.0,
        start: bool = True,
    ) -> KeyrelayProcess:
        """keys replaces TEST_KEYS; env adds variables (None removes one). start=False returns
        it unstarted, e.g. to assert that start() raises ProxyStartError."""
        proc = KeyrelayProcess(
            upstream_port=upstream_port or self._upstream.port,
            ca_file=self._tls.ca_cert,
            workdir=self._tmp / f"keyrelay-{len(self.started) + 1}",
            rules_text=rules_text,
            rules_path=rules_path,
            keys=keys,
            env=env,
            extra_args=extra_args,
            hosts=hosts,
            command=command,
            startup_timeout=startup_timeout,
        )
        self.started.append(proc)
        return proc.start() if start else proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop()


@pytest.fixture
def keyrelay_factory(
    upstream: UpstreamServer, test_ca: TlsMaterial, tmp_path: Path
) -> Iterator[KeyrelayFactory]:
    factory = KeyrelayFactory(upstream, test_ca, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def client(keyrelay: KeyrelayProcess) -> Iterator[HttpClient]:
    """A keep-alive HTTP client to the session keyrelay."""
    with HttpClient(keyrelay.port) as c:
        yield c


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    factory = ClientFactory()
    yield factory
    factory.close_all()


class ClientFactory:
    """make_client(port, keep_alive=...) -> HttpClient, closed at the end of the test."""

    def __init__(self) -> None:
        self.clients: list[HttpClient] = []

    def __call__(self, port: int, *, keep_alive: bool = True, timeout: float = 10.0) -> HttpClient:
        c = HttpClient(port, keep_alive=keep_alive, timeout=timeout)
        self.clients.append(c)
        return c

    def close_all(self) -> None:
        for c in self.clients:
            c.close()


# -- markers: what kind of test each is, by where it lives ---------------------------------------

TESTS = Path(__file__).parent
KINDS = ("unit", "e2e", "clients")
# What starts a process or opens a socket: a unit test takes none of these.
_PROCESSES = frozenset({"keyrelay", "keyrelay_factory", "upstream", "upstream_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`-m unit` runs the tests that need no process (under a minute); `-m e2e` the real
    mitmdump's; `-m clients` the SDKs' and the browser's; `-m bench` the benchmarks' own."""
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under {', '.join(KINDS)}")
        item.add_marker(kind)
        if item.path.name.startswith("test_bench"):
            item.add_marker("bench")
        spawns = _PROCESSES.intersection(getattr(item, "fixturenames", ()))
        if kind == "unit" and spawns:
            raise pytest.UsageError(f"{item.nodeid}: a unit test starts nothing ({sorted(spawns)})")


# -- scheduling on several workers (scripts/test: `--dist loadfile`) -------------------------------

# Files whose tests share no module fixture and are long enough to be the suite's last worker
# alone when kept together: split in PARTS, dealt out in turn, which go to workers first (the
# CE.SDK editor's ten runs in Chromium were six of the suite's eight minutes on one worker; in
# two parts, two editors run at a time, beside the other files).
SPREAD = frozenset({"tests/clients/test_cesdk_editor.py"})
PARTS = 2


class FilesExceptSpread(LoadFileScheduling):
    """xdist's loadfile (a file to a worker, so its module fixtures are made once), except for
    the files in SPREAD, which are handed out first, in PARTS: xdist hands out the files with
    the most tests first, which would leave these long ones for the end. It overrides two
    private methods of pytest-xdist 3.8's LoadScopeScheduling; should a later xdist rename
    them, the files are scheduled as loadfile does, slower but whole."""

    def __init__(self, config: pytest.Config, log: Any) -> None:
        super().__init__(config, log)
        self._parts: dict[str, str] = {}

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        if path not in SPREAD:
            return super()._split_scope(nodeid)
        if nodeid not in self._parts:  # dealt in turn, in the order collected
            dealt = sum(seen.startswith(f"{path}::") for seen in self._parts)
            self._parts[nodeid] = f"{path}::part{dealt % PARTS}"
        return self._parts[nodeid]

    def _assign_work_unit(self, node: Any) -> None:
        if spread := next((scope for scope in self.workqueue if "::part" in scope), None):
            self.workqueue.move_to_end(spread, last=False)
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadFileScheduling | None:
    if config.getvalue("dist") != "loadfile":
        return None  # another --dist asked for by name: xdist's own
    return FilesExceptSpread(config, log)
