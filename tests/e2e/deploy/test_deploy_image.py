"""deploy/ as far as this machine allows: no base image can be pulled and no systemd runs here,
so the recipes' own steps run without them.

- The container image: its COPY and install RUN steps build into a temporary root (the image's
  paths, /opt/keyrelay and so on, under it), and its ENTRYPOINT runs from there as the image
  would: the installed `keyrelay` console command, rules mounted, keys from an env file, HOME
  unwritable, mitmproxy's confdir on the volume, nothing else written.
- The systemd unit: `systemd-analyze verify`, and its ExecStart started the same way.
- TLS with an operator's own certificate (`--certs`): a client that trusts only that CA.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from recipes import DEPLOY, DOCKERFILE, REPO, UNIT, env_file
from support.client import HttpClient
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.redis_server import RedisServer
from support.tls import make_test_ca
from support.upstream import UpstreamServer

from addon.auth.tokens import token_hash
from addon.transport.drain import DRAIN_TIMEOUT

# The image's own paths: the test's root stands in for its filesystem.
IMAGE_PATHS = ("/opt/keyrelay", "/src", "/etc/keyrelay", "/var/lib/keyrelay")
CLIENT_TOKEN = "kr_deploy-test-token-3b9f"
ENV_FILE_KEYS = {**TEST_KEYS, "KEYRELAY_TOKENS": f"app:{token_hash(CLIENT_TOKEN)}"}
HOME = "/nonexistent"  # the image user's home (useradd --home-dir), here a file
SYSTEMD_ANALYZE = "systemd-analyze"  # scripts/_setup_systemd.sh installs it


class Root:
    """A directory standing in for the image's (or the host's) filesystem root."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, image_path: str) -> Path:
        return self.path / image_path.lstrip("/")

    def map(self, text: str) -> str:
        """The image's paths in a command or value, moved under this root."""
        pattern = "|".join(re.escape(p) for p in IMAGE_PATHS)
        return re.sub(rf"(?<![\w/.])({pattern})(?=/|\b|$)", lambda m: str(self / m[1]), text)

    def files(self, *, outside: str) -> set[Path]:
        """Every file and directory under the root except those under `outside`."""
        skip = self / outside
        return {p for p in self.path.rglob("*") if not p.is_relative_to(skip)}


# -- the image, built without Docker ------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Root:
    """The Dockerfile's COPY steps, then its RUN step that installs keyrelay, under a root."""
    root = Root(tmp_path_factory.mktemp("image"))
    for sources, dest in DOCKERFILE.copies:
        for source in sources:
            target = root / dest
            if dest.endswith("/"):
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(REPO / source, target)
    installs = [run for run in DOCKERFILE.runs if "deploy/install.sh" in run]
    assert len(installs) == 1, DOCKERFILE.runs
    python = Path(getattr(sys, "_base_executable", sys.executable))  # the image's python3
    done = subprocess.run(
        ["sh", "-euc", root.map(installs[0])],
        env={**os.environ, "PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (root / "/src").exists()  # the recipe removes its build context
    (root / "/etc/keyrelay").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def mounted(image: Root, redis: RedisServer) -> Root:
    """What an operator mounts: deploy/rules.yaml with this test's Redis, and a keys file."""
    rules = (DEPLOY / "rules.yaml").read_text()
    assert "redis://redis.internal:6379/0" in rules
    (image / "/etc/keyrelay/rules.yaml").write_text(
        rules.replace("redis://redis.internal:6379/0", redis.url)
    )
    keys = "".join(f"{k}={v}\n" for k, v in ENV_FILE_KEYS.items())
    (image / "/etc/keyrelay/keys.env").write_text(keys)
    shutil.rmtree(image / "/var/lib/keyrelay", ignore_errors=True)
    (image / "/var/lib/keyrelay").mkdir(parents=True)  # the volume, empty
    (image / HOME).touch()  # a file: nothing can be made under it
    return image


@dataclass
class Launch:
    command: list[str]
    env: dict[str, str]


def docker_launch(root: Root) -> Launch:
    """`docker run --env-file keys.env IMAGE`: its ENV, ENTRYPOINT and CMD."""
    env = {k: root.map(v).replace("$PATH", os.environ["PATH"]) for k, v in DOCKERFILE.env.items()}
    program, *args = DOCKERFILE.entrypoint + DOCKERFILE.cmd
    found = shutil.which(program, path=env["PATH"])
    assert found == str(root / f"/opt/keyrelay/bin/{program}"), found
    env.update(env_file(root / "/etc/keyrelay/keys.env"))
    return Launch([found, *(root.map(a) for a in args)], env)


def systemd_launch(root: Root) -> Launch:
    """The unit's ExecStart with its Environment= and EnvironmentFile=."""
    env = dict(pair.split("=", 1) for pair in shlex.split(" ".join(UNIT["Environment"])))
    for path in UNIT["EnvironmentFile"]:
        env.update(env_file(Path(root.map(path.lstrip("-")))))
    (command,) = UNIT["ExecStart"]
    return Launch([root.map(a) for a in shlex.split(command)], env)


def start_as_deployed(
    root: Root, launch: Launch, upstream: UpstreamServer, ca_file: Path
) -> KeyrelayProcess:
    """keyrelay from the recipe's command, wired to the fake upstream. HOME is a file, so
    nothing can be made under it (mitmproxy's default confdir is ~/.mitmproxy); the test's own
    listen address comes after the recipe's (`--listen-host 0.0.0.0` in the image)."""
    program, *args = launch.command
    proc = KeyrelayProcess(
        upstream_port=upstream.port,
        ca_file=ca_file,
        workdir=root.path / "test-harness",
        keys={},
        env={**launch.env, "HOME": str(root / HOME)},
        command=[program],
    )
    # The recipe names the rules and the confdir; the harness's own would set them twice.
    proc.args = [*args, *_without_options(proc.args, "confdir", "keyrelay_rules")]
    return proc.start()


def _without_options(args: list[str], *names: str) -> list[str]:
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--set" and args[i + 1].split("=", 1)[0] in names:
            skip = True
            continue
        kept.append(arg)
    return kept


def forwarded(client: HttpClient, upstream: UpstreamServer, host: str = "127.0.0.1") -> None:
    reply = client.post(
        "/api/openai/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers=[("Authorization", f"Bearer {CLIENT_TOKEN}"), ("Host", host)],
    )
    assert reply.status == 200, reply.text
    sent = upstream.only_request()
    assert sent.path == "/v1/chat/completions"
    assert sent.header("authorization") == f"Bearer {TEST_KEYS['OPENAI_API_KEY']}"
    assert reply.json()["path"] == "/v1/chat/completions"  # the upstream's echo came back


# -- the tests -----------------------------------------------------------------------------------


def test_the_image_runs_as_its_own_user_with_its_state_on_a_volume() -> None:
    assert DOCKERFILE.user and DOCKERFILE.user.split(":")[0] not in ("0", "root")
    uid = DOCKERFILE.user.split(":")[0]
    assert any(f"--uid {uid}" in run for run in DOCKERFILE.runs)
    assert DOCKERFILE.volumes == ["/var/lib/keyrelay"]
    assert "confdir=/var/lib/keyrelay/mitmproxy" in DOCKERFILE.entrypoint
    assert "keyrelay_rules=/etc/keyrelay/rules.yaml" in DOCKERFILE.entrypoint
    assert DOCKERFILE.stopsignal == "SIGTERM"
    assert DOCKERFILE.entrypoint[0] == "keyrelay"  # the console command, not scripts/dev
    # the build context holds what the COPY steps copy, and nothing else
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    copied = {source for sources, _ in DOCKERFILE.copies for source in sources}
    assert "*" in ignore and {line[1:] for line in ignore if line.startswith("!")} == copied


@pytest.mark.parametrize("recipe", ["docker", "systemd"])
def test_the_installed_command_serves_as_deployed_and_writes_only_its_state(
    mounted: Root, upstream: UpstreamServer, test_ca, recipe: str
) -> None:
    launch = docker_launch(mounted) if recipe == "docker" else systemd_launch(mounted)
    before = mounted.files(outside="/var/lib/keyrelay")
    relay = start_as_deployed(mounted, launch, upstream, test_ca.ca_cert)
    try:
        with HttpClient(relay.port) as client:
            assert client.get("/_keyrelay/live").json() == {"status": "live"}
            ready = client.get("/_keyrelay/ready")
            assert ready.status == 200, ready.text  # rules, keys and the Redis of deploy/rules.yaml
            forwarded(client, upstream)
            refused = client.post("/api/openai/chat/completions", json={})  # no client token
            assert refused.status == 401
        installed = mounted / "/opt/keyrelay/lib"
        script = relay.wait_for_output(r"Loading script (\S+)")[1]
        assert Path(script).is_relative_to(installed), script  # the package, not this checkout
    finally:
        assert relay.stop() == 0, relay.describe()  # SIGTERM: drained, exit 0
    assert (mounted / "/var/lib/keyrelay/mitmproxy/mitmproxy-ca.pem").is_file()
    written = mounted.files(outside="/var/lib/keyrelay") - before
    assert {p.relative_to(mounted.path).parts[0] for p in written} <= {"test-harness"}, written
    for secret in ENV_FILE_KEYS.values():
        assert secret not in relay.output()


def test_the_image_serves_tls_with_the_operators_own_certificate(
    mounted: Root, upstream: UpstreamServer, test_ca, tmp_path: Path
) -> None:
    """`--certs '*=/etc/keyrelay/tls.pem'` after the image name: the operator's chain and key in
    one PEM. A client that trusts only the operator's CA gets a forwarded answer over https."""
    operator = make_test_ca(tmp_path / "operator", ["keyrelay.example.com"], ca_name="operator CA")
    pem = mounted / "/etc/keyrelay/tls.pem"
    pem.write_bytes(operator.server_chain.read_bytes() + operator.server_key.read_bytes())
    certs = ["--certs", "*=/etc/keyrelay/tls.pem"]
    launch = docker_launch(mounted)
    launch.command += [mounted.map(a) for a in certs]
    relay = start_as_deployed(mounted, launch, upstream, test_ca.ca_cert)
    try:
        tls = operator.client_context()  # trusts the operator's CA and nothing else
        with HttpClient(relay.port, tls=tls, server_hostname="keyrelay.example.com") as client:
            forwarded(client, upstream, host="keyrelay.example.com")
        # a client trusting another CA (the fake upstreams') is refused: it is the operator's
        other = test_ca.client_context()
        with (
            HttpClient(relay.port, tls=other, server_hostname="keyrelay.example.com") as client,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            client.get("/_keyrelay/live")
    finally:
        assert relay.stop() == 0, relay.describe()


def verify(image: Root, directory: Path, unit_text: str) -> str:
    """`systemd-analyze verify` on the unit at the prefix installed above (it checks that
    ExecStart exists); what it says, exit code included. A warning exits 0."""
    analyze = shutil.which(SYSTEMD_ANALYZE)
    assert analyze, "systemd-analyze is missing: scripts/_setup_systemd.sh installs it"
    unit = directory / "keyrelay.service"
    unit.write_text(image.map(unit_text))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_the_systemd_unit_verifies_and_outlasts_the_drain(image: Root, tmp_path: Path) -> None:
    assert verify(image, tmp_path, (DEPLOY / "keyrelay.service").read_text()) == "exit 0\n"
    assert UNIT["KillSignal"] == ["SIGTERM"]
    assert int(UNIT["TimeoutStopSec"][0]) > DRAIN_TIMEOUT
    assert "-HUP $MAINPID" in UNIT["ExecReload"][0]
    assert UNIT["NoNewPrivileges"] == ["yes"] and UNIT["ProtectSystem"] == ["strict"]
    assert UNIT["StateDirectory"] == ["keyrelay"]  # /var/lib/keyrelay, where confdir is
    assert "confdir=/var/lib/keyrelay/mitmproxy" in UNIT["ExecStart"][0]
    assert UNIT["EnvironmentFile"] == ["/etc/keyrelay/keys.env"]


def test_the_unit_check_fails_on_a_bad_value(image: Root, tmp_path: Path) -> None:
    text = (DEPLOY / "keyrelay.service").read_text()
    said = verify(image, tmp_path, text.replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    assert "stricter" in said
