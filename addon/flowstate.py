"""What keyrelay records about a flow, in one typed place.

It lives in `flow.metadata[KEY]`, so it is saved with flows (`-w`), shown by mitmweb and read
back by replay: it never holds a secret. Every component reads and writes it through `of`.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from mitmproxy import http

KEY = "keyrelay"

# What keyrelay did with the request. A refusal's reason (the problem type) is `reason`.
Decision = Literal["forwarded", "refused", "preflight", "admin"]
Timeout = Literal["first-byte", "idle"]


class FlowState(TypedDict, total=False):
    decision: Decision
    reason: str  # for "refused": the problem type, e.g. "rate-limited"
    detail: str  # for "refused": the problem's detail, as the client got it (the origin refused,
    # why a credential was not accepted: never the credential)
    provider: str  # the provider the request was routed to
    upstream: str  # host and path it was forwarded to (never the query: it may hold secrets)
    client: str  # the client's address behind trusted proxies (peer.py; absent: the peer's)
    identity: str  # the caller, "kind:name" (auth/identity.py)
    claims: dict[str, str]  # only the claim that picks a tenant's key
    key_id: str  # which key was injected: a fingerprint, never the key
    cors: list[list[str]]  # the CORS headers every answer to this request carries
    timeout: Timeout  # which timeout ended the flow
    job: str  # "kind:id" of the job this request started or named (jobs/)
    usage: dict[str, float]  # the provider's own units by name (addon/metering/usage.py)
    cost: float  # USD, from the rules' prices (a cut stream: its whole reservation)
    charged: str  # "reservation" when the cost is the worst case (no usage was reported)
    model: str  # the model (or fal endpoint) it was priced as
    operation: str  # the profile's name of the call (`messages.create`), once routed
    request_model: str  # the model the request body asked for, once read (budget/)


def of(flow: http.HTTPFlow) -> FlowState:
    """The flow's state, created empty on first use."""
    state: FlowState | None = flow.metadata.get(KEY)
    if state is None:  # (not setdefault: it would make a dict on every call)
        state = flow.metadata[KEY] = FlowState()
    return state


def refused(state: FlowState, reason: str) -> None:
    state["decision"] = "refused"
    state["reason"] = reason
