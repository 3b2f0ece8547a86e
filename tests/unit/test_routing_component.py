"""Routing on flows (route, then rewrite for the upstream) and keyrelay_connect_to."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions, http
from mitmproxy.connection import ConnectionState, Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow
from support.repo import RULES

from addon import flowstate
from addon.config.rules import load
from addon.problems import Refusal
from addon.routing.component import Routing
from addon.routing.connect_to import ConnectTo
from addon.routing.router import Route

KEY = "sk-injected-0001"


@pytest.fixture
def routing() -> Routing:
    component = Routing()
    component.configure_rules(load(RULES, {}), "127.0.0.1")
    return component


def request(path: str, method: str = "POST", **headers: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, path
    flow.request.headers["host"] = "localhost:8080"
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    return flow


def routed(routing: Routing, flow: http.HTTPFlow) -> Route:
    route = routing.requestheaders(flow)
    assert isinstance(route, Route), route
    return route


def test_without_rules_every_request_is_refused() -> None:
    refusal = Routing().requestheaders(request("/api/openai/v1/models"))
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.reason) == (503, "not-configured")


def test_routing_names_the_provider_but_rewrites_nothing(routing: Routing) -> None:
    flow = request("/api/openai/chat/completions", authorization="Bearer client-token")
    route = routed(routing, flow)
    assert (route.host, route.path) == ("api.openai.com", "/v1/chat/completions")
    assert flowstate.of(flow) == {"provider": "openai", "operation": "chat.create"}
    assert flow.request.path == "/api/openai/chat/completions"
    assert flow.request.headers["authorization"] == "Bearer client-token"


def test_a_refused_route_names_no_provider(routing: Routing) -> None:
    flow = request("/nowhere")
    refusal = routing.requestheaders(flow)
    assert isinstance(refusal, Refusal) and refusal.status == 404
    assert flowstate.of(flow) == {}


def test_forward_injects_the_key_once_and_drops_the_clients_credentials(
    routing: Routing,
) -> None:
    flow = request(
        "/api/openai/chat/completions?api-version=2&token=secret-in-query",
        authorization="Bearer client-token",
        x_api_key="client-key",
        cookie="session=abc",
        origin="http://localhost:3000",
    )
    flow.request.headers.add("Authorization", "Bearer second")
    route = routed(routing, flow)
    routing.forward(flow, route, KEY)
    req = flow.request
    assert req.headers.get_all("authorization") == [f"Bearer {KEY}"]
    for dropped in ("x-api-key", "cookie", "origin"):
        assert dropped not in req.headers
    assert req.headers["accept-encoding"] == "identity"
    assert (req.scheme, req.host, req.port) == ("https", "api.openai.com", 443)
    assert req.path == "/v1/chat/completions?api-version=2&token=secret-in-query"
    assert req.headers["host"] == "api.openai.com"
    assert flowstate.of(flow) == {
        "provider": "openai",
        "operation": "chat.create",  # what the profile knows the call as
        "upstream": "api.openai.com/v1/chat/completions",
        "decision": "forwarded",
    }


def test_forward_to_a_header_target_drops_the_target_header(routing: Routing) -> None:
    flow = request(
        "/api/fal/proxy",
        x_fal_target_url="https://queue.fal.run/fal-ai/flux/dev?sync=1",
        x_fal_queue_priority="low",
        x_forwarded_for="10.1.1.1",
    )
    route = routed(routing, flow)
    routing.forward(flow, route, "id:secret")
    headers = flow.request.headers
    assert headers.get_all("authorization") == ["Key id:secret"]
    assert "x-fal-target-url" not in headers and "x-forwarded-for" not in headers
    assert headers["x-fal-queue-priority"] == "low"
    assert headers["x-fal-client-proxy"] == "keyrelay"
    assert flowstate.of(flow)["upstream"] == "queue.fal.run/fal-ai/flux/dev"


def test_forward_keeps_the_upgrade_of_a_websocket_and_a_port_in_host(routing: Routing) -> None:
    flow = request(
        "/api/elevenlabs/v1/text-to-speech/v1/stream-input",
        "GET",
        connection="Upgrade",
        upgrade="websocket",
    )
    route = routed(routing, flow)
    other = Route(route.provider, "http", "llm.internal", 8443, "/v1/realtime")
    routing.forward(flow, other, KEY)
    assert flow.request.headers["upgrade"] == "websocket"
    assert flow.request.headers["connection"] == "Upgrade"
    assert flow.request.headers["host"] == "llm.internal:8443"
    assert flow.request.url == "http://llm.internal:8443/v1/realtime"


# -- keyrelay_connect_to -------------------------------------------------------------------------


def hook_data(host: str, port: int) -> ServerConnectionHookData:
    return ServerConnectionHookData(
        server=Server(address=(host, port)), client=tflow.tclient_conn()
    )


def test_connect_to_redirects_by_name_and_restores_it_once_connected() -> None:
    connect_to = ConnectTo()
    with taddons.context(connect_to) as tctx:
        tctx.configure(connect_to, keyrelay_connect_to=["API.openai.com:443=[::1]:9443"])
        data = hook_data("api.OpenAI.com", 443)
        connect_to.server_connect(data)
        assert data.server.address == ("::1", 9443)
        data.server.state = ConnectionState.OPEN
        connect_to.server_connected(data)
        assert data.server.address == ("api.OpenAI.com", 443)

        elsewhere = hook_data("api.openai.com", 80)
        connect_to.server_connect(elsewhere)
        assert elsewhere.server.address == ("api.openai.com", 80)


def test_a_failed_connection_is_forgotten() -> None:
    connect_to = ConnectTo()
    with taddons.context(connect_to) as tctx:
        tctx.configure(connect_to, keyrelay_connect_to=["api.openai.com:443=127.0.0.1:9443"])
        data = hook_data("api.openai.com", 443)
        connect_to.server_connect(data)
        connect_to.server_connect_error(data)
        connect_to.server_connected(data)  # nothing left to restore
        assert data.server.address == ("127.0.0.1", 9443)


@pytest.mark.parametrize(
    "spec", ["api.openai.com:443", "api.openai.com=127.0.0.1:1", "a:443=b:0", "a:443=:1"]
)
def test_a_bad_connect_to_entry_is_an_options_error(spec: str) -> None:
    connect_to = ConnectTo()
    with taddons.context(connect_to) as tctx:
        with pytest.raises(exceptions.OptionsError, match="keyrelay_connect_to"):
            tctx.configure(connect_to, keyrelay_connect_to=[spec])
        assert connect_to.table == {}


@pytest.mark.parametrize(
    ("scheme", "host", "port", "expected"),
    [
        ("http", "llm.internal", 443, "llm.internal:443"),
        ("http", "::1", 11434, "[::1]:11434"),
        ("https", "api.openai.com", 443, "api.openai.com"),
    ],
)
def test_the_host_header_names_a_non_default_port_and_brackets_ipv6(
    routing: Routing, scheme: str, host: str, port: int, expected: str
) -> None:
    flow = request("/api/openai/models", "GET")
    route = routed(routing, flow)
    routing.forward(flow, Route(route.provider, scheme, host, port, "/models"), KEY)
    assert flow.request.headers["host"] == expected


def test_opening_a_whole_api_is_logged_at_start(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    quiet = Routing()
    with caplog.at_level("WARNING"):
        quiet.configure_rules(load(RULES, {}), "127.0.0.1")
    assert "opens every call" not in caplog.text  # the default rules open no whole API
    opened = RULES.read_text().replace(
        "    profile: openai\n",
        "    profile: openai\n    allow: [browser, '* api.openai.com/**']\n",
    )
    (tmp_path / "rules.yaml").write_text(opened)
    with caplog.at_level("WARNING"):
        Routing().configure_rules(load(tmp_path / "rules.yaml", {}), "127.0.0.1")
    assert "openai: allow '* api.openai.com/**' opens every call" in caplog.text
