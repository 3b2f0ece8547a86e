"""The real CE.SDK editor (@cesdk/cesdk-js 1.69, evaluation mode, its assets served from
node_modules) in headless Chromium, with its AI plugins, unmodified, configured as IMG.LY documents:
`proxyUrl` pointing at keyrelay, keyrelay's token in the provider's `headers` option (or, for a
provider that sends no header, the app's session cookie with keyrelay under the app's origin).
A user types a prompt into the plugin's panel and presses Generate (driver: cesdk/editor.mjs);
the request goes through keyrelay, with auth on, to a fake provider, and the result comes back
into the editor: a block on the page and an entry in the plugin's history. The text plugin has
no panel: a quick action in the canvas menu of a selected text block rewrites its text."""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from support import cors
from support.eachlabs import HOST as EACHLABS_HOST
from support.eachlabs import IMAGE as EACHLABS_IMAGE
from support.eachlabs import VIDEO as EACHLABS_VIDEO
from support.eachlabs import FakeEachLabs
from support.guard import token_entry
from support.proxy import TEST_KEYS, KeyrelayProcess
from support.runware import HOST as RUNWARE_HOST
from support.runware import IMAGE as RUNWARE_IMAGE
from support.runware import VIDEO as RUNWARE_VIDEO
from support.runware import FakeRunware
from support.upstream import RecordedRequest, ResponseWriter, UpstreamServer

from clients.app_server import AppServer
from clients.drivers import CLIENTS, run_driver
from clients.provider_fakes import (
    ANTHROPIC_DELTAS,
    FLUX_RESULT,
    OPENAI_DELTAS,
    PIXEL,
    anthropic_messages,
    install_fal,
    openai_chat_stream,
)

TOKEN = "editor-token-5c1e"
COOKIE = "kr"
PROMPT = "a red fox in the snow"


def rules(origin: str) -> str:
    """The repo's rules with the page's origin allowed, and every provider behind tokens, read
    from Authorization (`Bearer <token>`, the plugins' `headers` option) or the cookie `kr`."""
    text = yaml.safe_load(cors.allowing(origin))
    text["defaults"]["auth"] = {"mode": "tokens", "tokens": {"env": "KR_TOKENS"}, "cookie": COOKIE}
    return yaml.safe_dump(text)


@pytest.fixture
def editor_relay(keyrelay_factory: Any) -> Iterator[tuple[KeyrelayProcess, AppServer]]:
    """keyrelay, and the app serving tests/clients/cesdk on http://localhost:PORT (another origin
    than keyrelay's http://127.0.0.1:PORT), with keyrelay also under the app's /api/."""
    with AppServer(CLIENTS / "cesdk") as app:
        relay = keyrelay_factory(
            rules(f"http://localhost:{app.port}"), env={"KR_TOKENS": token_entry("alice", TOKEN)}
        )
        app.relay(relay.port)
        yield relay, app


def generate(
    node: str,
    chromium: str,
    relay: KeyrelayProcess,
    app: AppServer,
    pair: str,
    *,
    token: str | None = TOKEN,
    same_origin: bool = False,
) -> dict[str, Any]:
    """Runs one generation in the editor. `token`: given in the provider's `headers` option;
    `same_origin`: the provider's proxyUrl is the app's /api/ (keyrelay behind the app) and the
    session is the app's cookie."""
    query = {"pair": pair, "proxy": "" if same_origin else relay.url, "text": PROMPT}
    if token is not None:
        query["token"] = token
    env = {
        "PAGE_URL": f"http://localhost:{app.port}/editor.html?{urlencode(query)}",
        "CHROMIUM": chromium,
        "PROMPT": PROMPT,
    }
    if same_origin:
        env["COOKIE"] = f"{COOKIE}={TOKEN}"
    # Generous: on a loaded machine a video scene starves the page (one generation took 35 s here).
    return run_driver(node, "cesdk/editor.mjs", [], {**env, "TIMEOUT_MS": "180000"}, timeout=240)


def result_uris(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The files the editor's blocks show, and those in the plugin's history."""
    found = result["result"] or {"blocks": [], "history": []}
    return [b["uri"] for b in found["blocks"] if b["uri"]], [a["uri"] for a in found["history"]]


def explain(result: dict[str, Any]) -> Any:
    return {k: result.get(k) for k in ("error", "editor", "result", "console", "outside", "stderr")}


FAL_VIDEO = {"video": {"url": "https://v3.fal.media/files/zebra/keyrelay.mp4"}}
OPENAI_HOST = "api.openai.com"
ANTHROPIC_HOST = "api.anthropic.com"
ELEVENLABS_HOST = "api.elevenlabs.io"


def speech() -> bytes:
    """Half a second of a 440 Hz tone as a WAV file: audio the browser decodes (the plugin reads
    its length and draws its waveform), which ElevenLabs' MP3 would be."""
    frames = bytes(int(128 + 100 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(4000))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(frames)
    return out.getvalue()


def elevenlabs_speech(req: RecordedRequest, w: ResponseWriter) -> None:
    w.send_chunks([speech()], content_type="audio/mpeg", headers=[("character-cost", "20")])


def openai_image(req: RecordedRequest, w: ResponseWriter) -> None:
    """gpt-image-1 answers its image inline (base64) with its token usage."""
    usage = {"input_tokens": 12, "output_tokens": 272, "total_tokens": 284}
    usage["input_tokens_details"] = {"text_tokens": 12, "image_tokens": 0}  # type: ignore[assignment]
    w.send_json({"created": 1735689600, "data": [{"b64_json": PIXEL}], "usage": usage})


@dataclass(frozen=True)
class Pair:
    """One plugin with one provider: its fake, what it generates, where it is submitted, and how
    the editor's page sends keyrelay's credential."""

    install: Callable[[UpstreamServer, str], object]
    # the file the editor shows (text: the block's text); None: made in the browser (blob:)
    result: str | None
    host: str
    submit: str  # the path of the request that starts the generation
    credential: tuple[str, str]  # how the provider's key reached the upstream
    same_origin: bool = False  # no `headers` option: the app's cookie, keyrelay behind the app


FAL = ("authorization", f"Key {TEST_KEYS['FAL_KEY']}")
RUNWARE = ("authorization", f"Bearer {TEST_KEYS['RUNWARE_API_KEY']}")
EACHLABS = ("authorization", f"Bearer {TEST_KEYS['EACHLABS_API_KEY']}")
PAIRS = {
    "image:fal": Pair(
        lambda up, base: install_fal(up, base),
        FLUX_RESULT["images"][0]["url"],  # type: ignore[index]
        "queue.fal.run",
        "/fal-ai/recraft-v3",
        FAL,
    ),
    "image:openai": Pair(
        lambda up, _: up.route("POST", "/v1/images/generations", openai_image, host=OPENAI_HOST),
        None,
        OPENAI_HOST,
        "/v1/images/generations",
        ("authorization", f"Bearer {TEST_KEYS['OPENAI_API_KEY']}"),
    ),
    "image:runware": Pair(
        lambda up, _: FakeRunware().install(up), RUNWARE_IMAGE, RUNWARE_HOST, "/v1", RUNWARE, True
    ),
    "image:eachlabs": Pair(
        lambda up, _: FakeEachLabs().install(up),
        EACHLABS_IMAGE,
        EACHLABS_HOST,
        "/v1/prediction",
        EACHLABS,
        True,
    ),
    "video:fal": Pair(
        lambda up, base: install_fal(up, base, FAL_VIDEO),
        FAL_VIDEO["video"]["url"],
        "queue.fal.run",
        "/fal-ai/minimax/video-01-live",
        FAL,
    ),
    "video:runware": Pair(
        lambda up, _: FakeRunware().install(up), RUNWARE_VIDEO, RUNWARE_HOST, "/v1", RUNWARE, True
    ),
    "video:eachlabs": Pair(
        lambda up, _: FakeEachLabs().install(up),
        EACHLABS_VIDEO,
        EACHLABS_HOST,
        "/v1/prediction",
        EACHLABS,
        True,
    ),
    "audio:elevenlabs": Pair(
        lambda up, _: up.route(
            "POST", "/v1/text-to-speech/", elevenlabs_speech, host=ELEVENLABS_HOST
        ),
        None,
        ELEVENLABS_HOST,
        "/v1/text-to-speech/",
        ("xi-api-key", TEST_KEYS["ELEVENLABS_API_KEY"]),
    ),
    # The text plugin rewrites the selected text block (its "Improve Writing" quick action) with the
    # streamed answer.
    "text:anthropic": Pair(
        lambda up, _: up.route("POST", "/v1/messages", anthropic_messages(), host=ANTHROPIC_HOST),
        "".join(ANTHROPIC_DELTAS),
        ANTHROPIC_HOST,
        "/v1/messages",
        ("x-api-key", TEST_KEYS["ANTHROPIC_API_KEY"]),
    ),
    "text:openai": Pair(
        lambda up, _: up.route(
            "POST", "/v1/chat/completions", openai_chat_stream, host=OPENAI_HOST
        ),
        "".join(OPENAI_DELTAS),
        OPENAI_HOST,
        "/v1/chat/completions",
        ("authorization", f"Bearer {TEST_KEYS['OPENAI_API_KEY']}"),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_the_plugin_generates_through_keyrelay_into_the_editor(
    name: str,
    cesdk_plugins: str,
    chromium: str,
    editor_relay: tuple[KeyrelayProcess, AppServer],
    upstream: UpstreamServer,
    upload_server: UpstreamServer,
) -> None:
    pair = PAIRS[name]
    relay, app = editor_relay
    pair.install(upstream, upload_server.url)
    token = None if pair.same_origin else TOKEN
    result = generate(
        cesdk_plugins, chromium, relay, app, name, token=token, same_origin=pair.same_origin
    )
    assert result["ok"], explain(result)

    blocks, history = result_uris(result)
    if name.startswith("text"):  # the answer, applied, is the text block's text
        [text] = [b for b in result["result"]["blocks"] if b["id"] == result["editor"]["textBlock"]]
        assert (text["text"], text["state"], text["ai"]) == (pair.result, "Ready", None)  # applied
        assert result["result"]["editMode"] != "ly.img.ai.editMode"
    elif pair.result is None:  # the plugin made a blob: URL of the bytes keyrelay passed on
        assert history and all(uri.startswith("blob:") for uri in history)
    else:
        assert set(history) == {pair.result}  # the provider's history and the panel's
        assert pair.result in blocks
    if name.startswith("image"):
        image = [b for b in result["result"]["blocks"] if b["kind"] == "image"]
        assert [b["state"] for b in image] == ["Ready"]  # on the page, loaded by the editor

    submit = upstream.requests[0]
    assert (submit.method, submit.host) == ("POST", pair.host)
    assert submit.path.startswith(pair.submit)
    assert PROMPT in submit.body.decode()
    for r in upstream.requests:
        assert r.header_all(pair.credential[0]) == [pair.credential[1]]
        assert TOKEN not in str(r.headers) and r.header("cookie") is None
