"""Property tests: handle() never raises and always answers None or one valid JSON-RPC reply."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_server.engine import QueueSpec
from mi_server.mi.commands import REGISTRY
from tests.mi.arena_core import arena_core

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
METHOD = st.sampled_from(REGISTRY.names()) | st.text(max_size=12)
MEMBER = st.sampled_from(["jsonrpc", "method", "params", "id", "JSONRPC", "Id", "x"])
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | JSON,
        "method": METHOD | JSON,
        "params": st.lists(JSON, max_size=3) | st.dictionaries(
            st.sampled_from(["name", "limit", "key", "value", "statistics", "command"]),
            JSON, max_size=3,
        ) | JSON,
        "id": JSON,
    },
)
SAFE = [n for n in REGISTRY.names() if n != "kill"]


def _check(reply: bytes | None) -> None:
    if reply is None:
        return
    text = reply.decode("utf-8")  # always valid UTF-8
    doc = json.loads(text)
    for one in doc if isinstance(doc, list) else [doc]:
        assert list(one)[0] == "jsonrpc" and list(one)[-1] == "id"
        assert ("result" in one) != ("error" in one)
        if "error" in one:
            assert one["error"]["code"] != -32603


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    with arena_core([QueueSpec("q")]) as (core, _):
        _check(core.handle(data))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(REQUEST | st.lists(REQUEST, max_size=3) | JSON)
def test_arbitrary_json_requests_never_raise(doc):
    if isinstance(doc, dict) and doc.get("method") == "kill":
        doc["method"] = "which"
    if isinstance(doc, list):
        doc = [d for d in doc if not (isinstance(d, dict) and d.get("method") == "kill")]
    with arena_core([QueueSpec("q")], [("q", "k", "v")]) as (core, _):
        _check(core.handle(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")))
