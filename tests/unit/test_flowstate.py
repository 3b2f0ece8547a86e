"""flowstate: one typed record per flow, in its metadata, that survives saving the flow."""

from __future__ import annotations

import io as bytes_io

from mitmproxy import http, io
from mitmproxy.test import tflow

from addon import flowstate


def test_the_state_is_created_once_in_the_flows_metadata() -> None:
    flow = tflow.tflow()
    state = flowstate.of(flow)
    assert state == {}
    state["provider"] = "openai"
    assert flowstate.of(flow) is state
    assert flow.metadata[flowstate.KEY] == {"provider": "openai"}
    assert flowstate.of(tflow.tflow()) == {}  # never shared between flows


def test_a_refusal_keeps_its_reason_apart_from_the_decision() -> None:
    flow = tflow.tflow()
    state = flowstate.of(flow)
    state["decision"] = "forwarded"
    flowstate.refused(state, "rate-limited")
    assert flowstate.of(flow) == {"decision": "refused", "reason": "rate-limited"}


def test_the_state_is_saved_and_read_back_with_the_flow() -> None:
    flow = tflow.tflow(resp=True)
    flowstate.of(flow).update(
        {
            "decision": "forwarded",
            "provider": "fal",
            "upstream": "queue.fal.run/fal-ai/flux/dev",
            "identity": "jwt:alice",
            "claims": {"org": "acme"},
            "key_id": "1a2b3c4d",
            "cors": [["access-control-allow-origin", "http://localhost:3000"]],
            "timeout": "idle",
        }
    )
    buffer = bytes_io.BytesIO()
    io.FlowWriter(buffer).add(flow)
    buffer.seek(0)
    (loaded,) = io.FlowReader(buffer).stream()
    assert isinstance(loaded, http.HTTPFlow)
    assert flowstate.of(loaded) == flowstate.of(flow)
    assert flowstate.of(flow.copy()) == flowstate.of(flow)
