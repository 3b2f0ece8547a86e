import pytest

from addon.targets import PatternError, TargetError, compile_pattern, parse_target

FAL = [compile_pattern(p) for p in ("fal.run/**", "queue.fal.run/**", "rest.fal.ai/tokens/")]


def allowed(url: str) -> bool:
    target = parse_target(url)
    return any(p.matches(target) for p in FAL)


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://fal.run/fal-ai/flux/dev", "https://fal.run/fal-ai/flux/dev"),
        ("https://FAL.RUN./x?logs=1", "https://fal.run/x?logs=1"),
        ("HTTPS://fal.run:443/x", "https://fal.run/x"),
        ("https://fal.run", "https://fal.run/"),
        ("https://fal.run?x=1", "https://fal.run/?x=1"),
        ("https://fal.run/a/./b/../c", "https://fal.run/a/c"),
        ("https://fal.run/a/%2e%2E/b", "https://fal.run/b"),
        ("https://fal.run/../../etc", "https://fal.run/etc"),
        ("https://fal.run/%7Euser/%41", "https://fal.run/~user/A"),
        ("https://fal.run/a%20b", "https://fal.run/a%20b"),
        ("https://fal.run/a%3fb", "https://fal.run/a%3Fb"),
        ("https://fal\u3002run/x", "https://fal.run/x"),  # ideographic full stop maps to "."
        ("https://\uff46\uff41\uff4c.run/x", "https://fal.run/x"),  # fullwidth letters
    ],
)
def test_targets_are_normalised(raw: str, url: str) -> None:
    assert parse_target(raw).url == url


@pytest.mark.parametrize(
    "raw",
    [
        "http://fal.run/x",
        "ftp://fal.run/x",
        "//fal.run/x",
        "fal.run/x",
        "https:/fal.run/x",
        "https://fal.run@evil.com/",
        "https://evil.com@fal.run/",
        "https://fal.run%40evil.com/",
        "https://fal.run\\@evil.com/",
        "https://evil.com\\.fal.run/",
        "https://evil.com#.fal.run",
        "https://evil.com/#/fal.run",
        "https://fal.run:8443/x",
        "https://fal.run:/x",
        "https://fal.run:0443x/",
        "https://127.0.0.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0177.0.0.1/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://fal%2erun/",
        "https://fal..run/",
        "https://-fal.run/",
        "https://localhost/",
        "https://fal.run/a%2fb",
        "https://fal.run/a%2F..%2Fb",
        "https://fal.run/a%5cb",
        "https://fal.run/a%00",
        "https://fal.run/a%zz",
        "https://fal.run/a b",
        "https://fal.run/\r\nHost: evil",
        "https://fal.run/\x00",
        "https://fal.run/ä",
        "https://fal.run/x?a=b c",
        " https://fal.run/",
        "",
    ],
)
def test_hostile_or_malformed_targets_are_refused(raw: str) -> None:
    with pytest.raises(TargetError):
        parse_target(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "https://fal.run.evil.com/x",
        "https://evil.com/?x=fal.run",
        "https://evil.com/fal.run/x",
        "https://xfal.run/x",
        "https://queue.fal.run.evil.com/",
        "https://f\u0430l.run/x",  # Cyrillic "a": punycode, a different host
        "https://rest.fal.ai/tokens/x",
        "https://rest.fal.ai/storage/upload/initiate",
    ],
)
def test_lookalikes_parse_but_are_not_allowed(raw: str) -> None:
    assert not allowed(raw)


def test_allowed_targets() -> None:
    assert allowed("https://fal.run/fal-ai/flux/dev")
    assert allowed("https://queue.fal.run/fal-ai/flux/requests/R/status?logs=1")
    assert allowed("https://rest.fal.ai/tokens/")
    assert allowed("https://fal.run/")


def test_single_star_stays_in_one_segment_or_label() -> None:
    pattern = compile_pattern("*.fal.run/models/*")
    assert pattern.matches(parse_target("https://queue.fal.run/models/a"))
    assert not pattern.matches(parse_target("https://a.b.fal.run/models/a"))
    assert not pattern.matches(parse_target("https://queue.fal.run/models/a/b"))
    assert not pattern.matches(parse_target("https://fal.run/models/a"))


def test_query_patterns_match_the_query_when_given() -> None:
    pattern = compile_pattern("rest.fal.ai/storage/upload/initiate?storage_type=*")
    assert pattern.matches(
        parse_target("https://rest.fal.ai/storage/upload/initiate?storage_type=x")
    )
    assert not pattern.matches(parse_target("https://rest.fal.ai/storage/upload/initiate"))
    assert not pattern.matches(
        parse_target("https://rest.fal.ai/storage/upload/initiate?storage_type=x&y=1")
    )


def test_patterns_accept_an_https_scheme_and_upper_case() -> None:
    assert compile_pattern("https://FAL.run/**").matches(parse_target("https://fal.run/a"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://fal.run/**", "non-https"),
        ("fal.run", "needs a path"),
        ("fal.run:8443/**", "port"),
        ("user@fal.run/**", "'@'"),
        ("127.0.0.1/**", "IP address"),
        ("fal.run/a/../b", "dot segments"),
        ("fal.run/a%2Fb", "%2F"),
        ("fal..run/**", "host name"),
        ("fal.run/#x", "'#'"),
    ],
)
def test_patterns_that_cannot_match_are_errors(text: str, reason: str) -> None:
    with pytest.raises(PatternError, match=reason):
        compile_pattern(text)
