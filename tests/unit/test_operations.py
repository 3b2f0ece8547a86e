"""Operation patterns, `allow:` entries and what they open (addon/config/operations.py)."""

from __future__ import annotations

import pytest

from addon.config.model import ConfigError, Where
from addon.config.operations import Catalogue, OperationError, compile_operation
from addon.config.profiles import builtin_names, load
from addon.config.provider import Defaults, parse_provider


def test_a_pattern_names_methods_host_and_path_with_placeholders() -> None:
    op = compile_operation("GET|HEAD api.openai.com/v1/responses/{response}/input_items")
    assert op.placeholders == ("response",)
    assert op.match("GET", "api.openai.com", "/v1/responses/resp_1/input_items") == {
        "response": "resp_1"
    }
    assert op.match("HEAD", "api.openai.com", "/v1/responses/resp_1/input_items") is not None
    for method, host, path in [
        ("POST", "api.openai.com", "/v1/responses/resp_1/input_items"),  # another method
        ("GET", "api.openai.com", "/v1/responses//input_items"),  # an empty segment
        ("GET", "api.openai.com", "/v1/Responses/resp_1/input_items"),  # another case
        ("GET", "api.openai.com", "/v1/responses;v=1/resp_1/input_items"),  # a parameter
        ("GET", "evil.com", "/v1/responses/resp_1/input_items"),
        ("GET", "api.openai.com.evil.com", "/v1/responses/resp_1/input_items"),
    ]:
        assert op.match(method, host, path) is None, (method, host, path)


def test_globs_and_the_whole_host() -> None:
    everything = compile_operation("* fal.run/**")
    assert everything.opens_everything
    assert everything.match("DELETE", "fal.run", "/") is not None
    assert everything.match("GET", "fal.run", "/a/b/c") is not None
    assert compile_operation("* api.openai.com/v1/**").opens_everything
    assert compile_operation("* https://api.openai.com/**").opens_everything
    assert not compile_operation("POST fal.run/**").opens_everything
    one = compile_operation("POST api.elevenlabs.io/v1/text-to-speech/*")
    assert not one.opens_everything
    assert one.match("POST", "api.elevenlabs.io", "/v1/text-to-speech/abc") is not None
    assert one.match("POST", "api.elevenlabs.io", "/v1/text-to-speech/abc/stream") is None
    assert one.match("POST", "api.elevenlabs.io", "/v1/text-to-speech/") is None
    under = compile_operation("POST queue.fal.run/**")
    assert under.match("POST", "queue.fal.run", "/fal-ai/flux/dev") is not None
    assert under.match("POST", "queue.fal.run.evil.com", "/x") is None


def test_a_custom_method_segment_names_one_model_and_its_verb() -> None:
    """Google's `models/{model}:generateContent`: `*:verb` is one segment ending in the verb."""
    op = compile_operation("POST generativelanguage.googleapis.com/*/models/*:generateContent")
    host = "generativelanguage.googleapis.com"
    assert op.match("POST", host, "/v1beta/models/gemini-2.5-flash:generateContent") == {}
    assert op.match("POST", host, "/v1/models/gemini-2.5-flash:generateContent") == {}
    for path in [
        "/v1/models/gemini-2.5-flash:streamGenerateContent",  # another verb
        "/v1/models/gemini-2.5-flash:generatecontent",  # another case
        "/v1/models/:generateContent",  # no model
        "/v1/models/a:countTokens:generateContent",  # a segment with two verbs
        "/v1/models/gemini-2.5-flash%3AgenerateContent",  # an escaped colon
        "/v1/models/a/b:generateContent",  # two segments
        "/v1/tunedModels/a:generateContent",
    ]:
        assert op.match("POST", host, path) is None, path
    literal = compile_operation(f"POST {host}/v1/models/gemini-2.5-flash:generateContent")
    assert literal.match("POST", host, "/v1/models/gemini-2.5-flash:generateContent") == {}
    assert literal.match("POST", host, "/v1/models/gemini-2.5-pro:generateContent") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("POST g.googleapis.com/models/*:", "not a path segment"),
        ("POST g.googleapis.com/models/*:a/b*", "not a path segment"),
        ("POST g.googleapis.com/models/x*:verb", "not a path segment"),
        ("fal.run/**", "names no method: write 'POST fal.run/**'"),
        ("get fal.run/**", "is not a method"),
        ("POST http://fal.run/**", "only https"),
        ("POST fal.run/x?y=1", "no query"),
        ("POST fal.run", "needs a path"),
        ("POST fal/x", "not a host name"),
        ("POST fal.run/{a}/{a}", "twice"),
        ("POST fal.run/../x", "not a path segment"),
        ("POST fal.run/a b", "not a path segment"),
    ],
)
def test_malformed_patterns_say_how_to_write_them(text: str, reason: str) -> None:
    with pytest.raises(OperationError, match=reason.replace("*", r"\*").replace("?", r"\?")):
        compile_operation(text)


PROVIDER = {
    "objects": {"thing": {"id": "thg_[a-z0-9]{4,}", "in_answer": ["id"]}},
    "operations": {
        "things.list": {"op": "GET api.acme.test/v1/things/list", "kind": "list"},
        "things.get": {
            "op": "GET api.acme.test/v1/things/{thing}",
            "kind": "read",
            "browser": True,
        },
        "things.make": {
            "op": "POST api.acme.test/v1/things",
            "kind": "generate",
            "browser": True,
            "creates": "thing",
        },
    },
}


def provider_catalogue(entry: dict) -> Catalogue:
    """A provider of rules.yaml's own (no profile) with these objects, operations and allow."""
    routing = {
        "profile": "none",
        "match": {"header": "x-acme"},
        "credential": {"header": "k", "key": {"env": "K"}},
    }
    provider = parse_provider("acme", {**routing, **entry}, Defaults(), Where("r.yaml", "p"))
    return provider.catalogue


def catalogue(allow: list[str] | None) -> Catalogue:
    return provider_catalogue({**PROVIDER, "allow": ["browser"] if allow is None else allow})


def test_an_allowed_operation_never_opens_another_that_its_pattern_would_fit() -> None:
    """`things.get`'s pattern fits `GET /v1/things/list`, which the profile knows as
    `things.list`: opening the first does not open the second."""
    cat = catalogue(None)
    listing = cat.operation("GET", "api.acme.test", "/v1/things/list")
    assert listing is not None and listing.name == "things.list"
    assert not cat.allows("GET", "api.acme.test", "/v1/things/list", listing)
    one = cat.operation("GET", "api.acme.test", "/v1/things/thg_1234")
    assert one is not None and cat.allows("GET", "api.acme.test", "/v1/things/thg_1234", one)
    # A pattern of allow's own opens whatever it covers, known operations included.
    wide = catalogue(["* api.acme.test/**"])
    assert wide.allows("GET", "api.acme.test", "/v1/things/list", listing)
    named = catalogue(["things.list"])
    assert named.allows("GET", "api.acme.test", "/v1/things/list", listing)
    assert not named.allows(
        "POST", "api.acme.test", "/v1/things", cat.operation("POST", "api.acme.test", "/v1/things")
    )


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"allow": ["things.gone"]}, "p.allow[0]", "names no method"),
        ({"allow": ["api.acme.test/x"]}, "p.allow[0]", "write 'POST api.acme.test/x'"),
        (
            {"operations": {"x": {"op": "GET api.acme.test/{nothing}", "kind": "read"}}},
            "p.operations.x.op",
            "not an object type",
        ),
        (
            {"operations": {"x": {"op": "GET api.acme.test/a", "kind": "steal"}}},
            "p.operations.x.kind",
            "must be one of",
        ),
        (
            {"objects": {"thing": {"id": "a*", "in_answer": ["id"]}}},
            "p.objects.thing.id",
            "empty id",
        ),
    ],
)
def test_mistakes_name_the_key(change: dict, key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        provider_catalogue({**PROVIDER, "allow": ["browser"], **change})
    assert info.value.key == key


CLOSED_KINDS = {"list", "account", "admin", "mint-credential"}


@pytest.mark.parametrize("name", builtin_names())
def test_no_built_in_profile_opens_a_listing_account_admin_or_minting_by_default(
    name: str,
) -> None:
    profile = load(name)
    assert profile.operations, name
    opened = [o.name for o in profile.operations if o.browser and o.kind in CLOSED_KINDS]
    # The one listing a browser needs: the models a key may use (no user's objects in it).
    assert [o for o in opened if not o.startswith("models.")] == [], name
    for operation in profile.operations:
        for placeholder in operation.pattern.placeholders:
            assert placeholder in profile.objects
