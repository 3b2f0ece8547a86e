"""With the repo's rules.yaml, the keys reach what the browser clients call and nothing else:
the calls a security review sent as an anonymous visitor (no browser app needs any of them)."""

from __future__ import annotations

import pytest
from support.repo import RULES as RULES_FILE

from addon.config.rules import load
from addon.problems import Refusal
from addon.routing.router import Route, Router

ROUTER = Router(load(RULES_FILE, {}))
FAL, INF = "/api/fal/proxy", "/api/inference/proxy"
JOB = "0b6c2a1e-4f3d-4e2a-9c1b-7a8d9e0f1a2b"

NOT_FOR_BROWSERS = [
    # OpenAI: the organisation's files, fine-tuning, stored completions, keys, admin
    ("GET", "/api/openai/files", None),
    ("GET", "/api/openai/files?purpose=assistants", None),
    ("GET", "/api/openai/chat/completions?limit=100", None),
    ("POST", "/api/openai/fine_tuning/jobs", None),
    ("GET", "/api/openai/fine_tuning/jobs", None),
    ("POST", "/api/openai/batches", None),
    ("GET", "/api/openai/batches", None),
    ("POST", "/api/openai/realtime/client_secrets", None),
    ("POST", "/api/openai/realtime/sessions", None),
    ("GET", "/api/openai/realtime?model=gpt-realtime", None),
    ("GET", "/api/openai/vector_stores", None),
    ("POST", "/api/openai/assistants", None),
    ("POST", "/api/openai/threads", None),
    ("GET", "/api/openai/organization/users", None),
    ("GET", "/api/openai/organization/admin_api_keys", None),
    ("DELETE", "/api/openai/models/ft:gpt-4o:org:x", None),
    ("GET", "/api/openai/videos", None),
    ("POST", "/api/openai/uploads", None),
    # Anthropic: files, batches, organisation
    ("GET", "/api/anthropic/v1/files", None),
    ("POST", "/api/anthropic/v1/messages/batches", None),
    ("GET", "/api/anthropic/v1/messages/batches", None),
    ("GET", "/api/anthropic/v1/messages/batches/msgbatch_01abcdefgh/results", None),
    ("GET", "/api/anthropic/v1/organizations/users", None),
    ("POST", "/api/anthropic/v1/organizations/invites", None),
    # ElevenLabs: history, voices, user, workspace, Conversational AI, tokens
    ("GET", "/api/elevenlabs/v1/history", None),
    ("GET", "/api/elevenlabs/v1/history/abc/audio", None),
    ("GET", "/api/elevenlabs/v1/voices", None),
    ("DELETE", "/api/elevenlabs/v1/voices/abc", None),
    ("POST", "/api/elevenlabs/v1/voices/add", None),
    ("GET", "/api/elevenlabs/v2/voices", None),
    ("GET", "/api/elevenlabs/v1/user", None),
    ("GET", "/api/elevenlabs/v1/user/subscription", None),
    ("POST", "/api/elevenlabs/v1/workspace/invites/add", None),
    ("GET", "/api/elevenlabs/v1/convai/conversation/get-signed-url?agent_id=a", None),
    ("POST", "/api/elevenlabs/v1/single-use-token/realtime_scribe", None),
    # fal: tokens, anything but the queue's and runs' own calls
    (FAL, "POST", "https://rest.fal.ai/tokens/"),
    (FAL, "GET", "https://rest.fal.ai/billing/user_balance"),
    (FAL, "GET", "https://rest.fal.ai/keys"),
    (FAL, "GET", f"https://fal.run/fal-ai/flux/requests/{JOB}"),
    (FAL, "GET", f"https://queue.fal.run/fal-ai/flux/requests;v=1/{JOB}"),
    (FAL, "GET", f"https://queue.fal.run/fal-ai/flux/request/{JOB}/status"),
    (FAL, "DELETE", f"https://queue.fal.run/fal-ai/flux/requests/{JOB}"),
    # inference.sh: every task, chat, secret, user and file of the account
    (INF, "GET", "https://api.inference.sh/tasks"),
    (INF, "POST", "https://api.inference.sh/tasks/list"),
    (INF, "GET", "https://api.inference.sh/chats"),
    (INF, "POST", "https://api.inference.sh/chats/list"),
    (INF, "GET", "https://api.inference.sh/secrets"),
    (INF, "GET", "https://api.inference.sh/users/me"),
    (INF, "GET", "https://api.inference.sh/files"),
    (INF, "POST", "https://api.inference.sh/files/list"),
    (INF, "GET", "https://api.inference.sh/task/t_1"),
]


def decide(first: str, second: str, third: str | None) -> Route | Refusal:
    if third is None:  # a prefix route: method, path
        return ROUTER.route(first, second, {}.get)
    header = "x-fal-target-url" if first == FAL else "x-inf-target-url"
    return ROUTER.route(second, first, {header: third}.get)


@pytest.mark.parametrize(("first", "second", "third"), NOT_FOR_BROWSERS)
def test_nothing_a_browser_does_not_call_is_open(
    first: str, second: str, third: str | None
) -> None:
    refusal = decide(first, second, third)
    assert isinstance(refusal, Refusal), refusal
    assert (refusal.status, refusal.reason) == (403, "operation-not-allowed")
    assert "providers." in refusal.detail and ".allow in rules.yaml" in refusal.detail


BROWSER_CALLS = [
    ("POST", "/api/openai/chat/completions", None),
    ("POST", "/api/openai/responses", None),
    ("GET", "/api/openai/responses/resp_0123456789", None),
    ("POST", "/api/openai/images/edits", None),
    ("POST", "/api/openai/images/generations", None),
    ("POST", "/api/openai/audio/speech", None),
    ("POST", "/api/openai/files", None),
    ("GET", "/api/openai/models", None),
    ("POST", "/api/anthropic/v1/messages", None),
    ("POST", "/api/anthropic/v1/messages/count_tokens", None),
    ("GET", "/api/anthropic/v1/models", None),
    ("POST", "/api/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM", None),
    ("POST", "/api/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream", None),
    ("POST", "/api/elevenlabs/v1/sound-generation", None),
    (FAL, "POST", "https://queue.fal.run/fal-ai/flux/dev"),
    (FAL, "GET", f"https://queue.fal.run/fal-ai/flux/requests/{JOB}/status?logs=1"),
    (FAL, "GET", f"https://queue.fal.run/fal-ai/flux/requests/{JOB}"),
    (FAL, "PUT", f"https://queue.fal.run/fal-ai/flux/requests/{JOB}/cancel"),
    (FAL, "POST", "https://fal.run/fal-ai/flux/dev"),
    (FAL, "POST", "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"),
    (INF, "POST", "https://api.inference.sh/apps/run"),
    (INF, "GET", "https://api.inference.sh/tasks/t_1/stream"),
    (INF, "POST", "https://api.inference.sh/files"),
]


@pytest.mark.parametrize(("first", "second", "third"), BROWSER_CALLS)
def test_what_the_browser_clients_call_is_open(first: str, second: str, third: str | None) -> None:
    route = decide(first, second, third)
    assert isinstance(route, Route), route
    assert route.operation is not None and route.operation.browser
