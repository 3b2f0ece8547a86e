from pathlib import Path

import pytest
from support.repo import RULES as RULES_FILE

from addon.config.model import ConfigError
from addon.config.rules import load
from addon.problems import Refusal
from addon.routing.router import Route, Router

RULES = load(RULES_FILE, {})
JOB = "0b6c2a1e-4f3d-4e2a-9c1b-7a8d9e0f1a2b"
ROUTER = Router(RULES)


def route(method: str, path: str, headers: dict[str, str] | None = None) -> Route | Refusal:
    return ROUTER.route(method, path, (headers or {}).get)


def routed(method: str, path: str, headers: dict[str, str] | None = None) -> Route:
    decision = route(method, path, headers)
    assert isinstance(decision, Route), decision
    return decision


def refused(method: str, path: str, headers: dict[str, str] | None = None) -> Refusal:
    decision = route(method, path, headers)
    assert isinstance(decision, Refusal), decision
    return decision


@pytest.mark.parametrize(
    ("path", "provider", "url"),
    [
        (
            "/api/anthropic/v1/messages?x=1",
            "anthropic",
            "https://api.anthropic.com/v1/messages?x=1",
        ),
        ("/api/openai/chat/completions", "openai", "https://api.openai.com/v1/chat/completions"),
        (
            "/api/openai/images/generations",
            "openai",
            "https://api.openai.com/v1/images/generations",
        ),
        (
            "/api/elevenlabs/v1/text-to-speech/v?output_format=mp3_44100_128",
            "elevenlabs",
            "https://api.elevenlabs.io/v1/text-to-speech/v?output_format=mp3_44100_128",
        ),
        (
            "/api/openai/../anthropic/v1/messages",
            "anthropic",
            "https://api.anthropic.com/v1/messages",
        ),
    ],
)
def test_prefix_routes(path: str, provider: str, url: str) -> None:
    decision = routed("POST", path)
    assert decision.provider.name == provider
    assert decision.url == url


def test_dot_segments_cannot_climb_out_of_the_base_path() -> None:
    # /v1 is the base path: "../" is resolved before the prefix is matched, so it cannot escape.
    assert refused("GET", "/api/openai/../../admin").status == 404
    assert refused("GET", "/api/openai/%2e%2e/x").status == 404


def test_prefix_must_end_at_a_segment() -> None:
    assert refused("POST", "/api/anthropicx/v1/messages").status == 404


@pytest.mark.parametrize("path", ["/api/fal/proxy", "/anything/else", "/api/falai", "/"])
def test_fal_routes_on_any_path(path: str) -> None:
    decision = routed(
        "POST", path, {"x-fal-target-url": "https://queue.fal.run/fal-ai/flux/dev?a=1"}
    )
    assert decision.provider.name == "fal"
    assert decision.url == "https://queue.fal.run/fal-ai/flux/dev?a=1"


def test_inference_routes_by_header_or_query() -> None:
    by_header = routed(
        "GET", "/api/inference/proxy", {"x-inf-target-url": "https://api.inference.sh/tasks/1"}
    )
    by_query = routed(
        "GET",
        "/api/inference/proxy?__inf_target=https%3A%2F%2Fapi.inference.sh%2Ftasks%2F1%2Fstream",
    )
    assert by_header.url == "https://api.inference.sh/tasks/1"
    assert by_query.url == "https://api.inference.sh/tasks/1/stream"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "reason"),
    [
        ("POST", "/api/fal/proxy", {}, 400, "missing-target"),
        ("POST", "/api/inference/proxy", {}, 400, "missing-target"),
        ("POST", "/x", {"x-fal-target-url": ""}, 400, "missing-target"),
        ("POST", "/x", {"x-fal-target-url": "https://evil.com/"}, 412, "target-not-allowed"),
        ("POST", "/x", {"x-fal-target-url": "https://fal.run@evil.com/"}, 412, "target-invalid"),
        ("POST", "/x", {"x-fal-target-url": "not a url"}, 412, "target-invalid"),
        (
            "POST",
            "/x",
            {"x-fal-target-url": "https://a.fal.run/, https://evil.com/"},
            412,
            "target-invalid",
        ),
        (
            "PATCH",
            "/x",
            {"x-fal-target-url": "https://fal.run/fal-ai/flux/dev"},
            405,
            "method-not-allowed",
        ),
        ("GET", "/x?__inf_target=https%3A%2F%2Fevil.com%2F", {}, 412, "target-not-allowed"),
        ("GET", "/nothing", {}, 404, "no-route"),
        ("GET", "/api/anthropic/a b", {}, 400, "malformed-path"),
    ],
)
def test_refusals(
    method: str, path: str, headers: dict[str, str], status: int, reason: str
) -> None:
    refusal = refused(method, path, headers)
    assert (refusal.status, refusal.reason) == (status, reason)


def test_method_refusal_lists_allowed_methods(tmp_path: Path) -> None:
    text = RULES_FILE.read_text().replace(
        "    profile: fal\n", "    profile: fal\n    methods: [GET, POST]\n"
    )
    (tmp_path / "rules.yaml").write_text(text)
    router = Router(load(tmp_path / "rules.yaml", {}))
    target = {"x-fal-target-url": "https://fal.run/fal-ai/flux/dev"}
    refusal = router.route("PATCH", "/x", target.get)
    assert isinstance(refusal, Refusal) and refusal.reason == "method-not-allowed"
    assert dict(refusal.headers)["allow"] == "GET, POST"


def test_endpoint_allowlist(tmp_path: Path) -> None:
    text = RULES_FILE.read_text()
    text = text.replace(
        "    # endpoints:\n    #   allow: [fal-ai/flux/dev]\n"
        "    #   hosts: [fal.run, queue.fal.run]",
        "    endpoints:\n      allow: [fal-ai/flux/dev]\n      hosts: [fal.run, queue.fal.run]",
    )
    (tmp_path / "rules.yaml").write_text(text)
    router = Router(load(tmp_path / "rules.yaml", {}))

    def decide(method: str, url: str) -> Route | Refusal:
        return router.route(method, "/api/fal/proxy", {"x-fal-target-url": url}.get)

    assert isinstance(decide("POST", "https://queue.fal.run/fal-ai/flux/dev"), Route)
    assert isinstance(decide("POST", "https://fal.run/fal-ai/flux/dev/stream"), Route)
    # Status polls and results are GETs on the app path: never counted as running a model.
    assert isinstance(
        decide("GET", f"https://queue.fal.run/fal-ai/flux/requests/{JOB}/status"), Route
    )
    assert isinstance(decide("POST", "https://rest.fal.ai/storage/upload/initiate"), Route)
    refusal = decide("POST", "https://fal.run/fal-ai/flux-pro/v1.1-ultra")
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.reason) == (
        403,
        "endpoint-not-allowed",
    )
    refusal = decide("POST", "https://fal.run/fal-ai/flux/devil")
    assert isinstance(refusal, Refusal) and refusal.status == 403


@pytest.mark.parametrize(
    "path",
    [
        "/api/openai/models?a=1 HTTP/1.0",
        "/api/openai/models?a=1\tb",
        "/api/openai/models?a=1\x0bb",
        "/api/openai/models?a=\u00e9",
    ],
)
def test_a_prefix_route_query_goes_upstream_only_when_well_formed(path: str) -> None:
    refusal = refused("GET", path)
    assert (refusal.status, refusal.reason) == (400, "malformed-path")
    assert routed("GET", "/api/openai/models?a=1&b=%20x&c=d/e?f").url.endswith(
        "?a=1&b=%20x&c=d/e?f"
    )


def test_a_prefix_provider_may_list_the_upstream_paths_it_may_reach(tmp_path: Path) -> None:
    text = RULES_FILE.read_text()
    text = text.replace(
        "    profile: openai\n",
        '    profile: openai\n    allow: [chat.create, "POST api.openai.com/v1/images/*"]\n',
    )
    (tmp_path / "rules.yaml").write_text(text)
    router = Router(load(tmp_path / "rules.yaml", {}))

    def decide(path: str) -> Route | Refusal:
        return router.route("POST", path, {}.get)

    assert isinstance(decide("/api/openai/chat/completions?x=1"), Route)
    assert isinstance(decide("/api/openai/images/edits"), Route)
    for path in ["/api/openai/files/f1/content", "/api/openai/images/a/b", "/api/openai"]:
        refusal = decide(path)
        assert isinstance(refusal, Refusal) and (refusal.status, refusal.reason) == (
            403,
            "operation-not-allowed",
        )


def test_a_prefix_allow_pattern_for_another_host_is_an_error(tmp_path: Path) -> None:
    text = RULES_FILE.read_text()
    text = text.replace(
        "    profile: openai\n",
        "    profile: openai\n    allow: ['* api.anthropic.com/**']\n",
    )
    (tmp_path / "rules.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"providers\.openai\.allow\[0\]: .*never match"):
        load(tmp_path / "rules.yaml", {})


def test_a_remembered_decision_is_per_method_target_and_target_header() -> None:
    router = Router(RULES)
    fal = "/api/fal/proxy"
    first = router.route("POST", fal, {"x-fal-target-url": "https://fal.run/fal-ai/a"}.get)
    other = router.route("POST", fal, {"x-fal-target-url": "https://fal.run/fal-ai/b"}.get)
    assert isinstance(first, Route) and isinstance(other, Route)
    assert (first.path, other.path) == ("/fal-ai/a", "/fal-ai/b")
    assert isinstance(router.route("POST", fal, {}.get), Refusal)  # no header: not the route
    assert router.route("POST", fal, {"x-fal-target-url": "https://fal.run/fal-ai/a"}.get) is first
    assert isinstance(router.route("TRACE", "/api/openai/chat/completions", {}.get), Refusal)
    assert isinstance(router.route("POST", "/api/openai/chat/completions", {}.get), Route)


def test_only_short_requests_are_remembered() -> None:
    router = Router(RULES)
    long_path = "/api/openai/" + "a" * 600
    assert isinstance(router.route("POST", long_path, {}.get), Refusal)
    assert isinstance(router.route("POST", "/api/openai/chat/completions", {}.get), Route)
    assert len(router._decided) == 1  # the long one was decided, not kept
