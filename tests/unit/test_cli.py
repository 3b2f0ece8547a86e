"""addon/cli.py: the `keyrelay` command's mitmproxy arguments and Python optimisation level."""

from __future__ import annotations

import pytest

from addon import cli


def test_the_base_options_come_first_so_arguments_override_them() -> None:
    args = cli.mitmproxy_args("mitmdump", ["--listen-port", "9000"], {})
    assert args[:2] == ["--mode", "reverse:http://keyrelay.invalid"]
    assert args[-2:] == ["--listen-port", "9000"]  # argparse: the last one wins
    assert args[args.index("-s") + 1] == str(cli.ADDON_SCRIPT)
    assert cli.ADDON_SCRIPT.is_file()
    assert args[args.index("flow_detail=0") - 1] == "--set"


def test_the_address_comes_from_the_environment_or_loopback() -> None:
    args = cli.mitmproxy_args("mitmdump", [], {"KEYRELAY_HOST": "0.0.0.0", "KEYRELAY_PORT": "81"})
    assert args[args.index("--listen-host") + 1] == "0.0.0.0"
    assert args[args.index("--listen-port") + 1] == "81"
    empty = cli.mitmproxy_args("mitmdump", [], {"KEYRELAY_HOST": "", "KEYRELAY_PORT": ""})
    assert empty[empty.index("--listen-host") + 1] == "127.0.0.1"
    assert empty[empty.index("--listen-port") + 1] == "8080"


@pytest.mark.parametrize(
    "tool,args",
    [("mitmweb", []), ("mitmdump", ["--set", "flow_detail=2"]), ("mitmdump", ["flow_detail=1"])],
)
def test_flow_detail_is_quietened_only_where_nobody_set_it(tool: str, args: list[str]) -> None:
    # mitmproxy refuses an option set twice
    assert "flow_detail=0" not in cli.mitmproxy_args(tool, args, {})


@pytest.mark.parametrize(
    "env,expected",
    [({}, ("1", 1)), ({"PYTHONOPTIMIZE": ""}, ("", 0)), ({"PYTHONOPTIMIZE": "2"}, ("2", 2))],
)
def test_pythonoptimize_is_1_unless_set(env: dict[str, str], expected: tuple[str, int]) -> None:
    assert cli.optimize_setting(env) == expected
