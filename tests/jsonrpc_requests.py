"""Hypothesis strategies of JSON-RPC request bodies near the narrow shape the compiled fast
paths take (mi_fifo/jsonrpc_request.h): half of them of that shape, the rest anything near
it (escapes, other member names, numbers, nested values), for the tests that hold a
compiled path to the Python path it stands in for."""

from __future__ import annotations

import json

from hypothesis import strategies as st

_SIMPLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)
_ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=4)


def _json_string(draw) -> str:
    s = draw(st.one_of(_SIMPLE, _SIMPLE, _ANY_TEXT))
    if draw(st.booleans()):  # escape the way a JSON writer might, or as literally as legal
        return json.dumps(s, ensure_ascii=draw(st.booleans()))
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NUMBERS = st.sampled_from(["0", "1", "-1", "-0", "01", "7.0", "1e2", "123456789",
                            "-123456789", "1234567890", "2147483647", "-2147483648"])


@st.composite
def _value(draw, depth=0) -> str:
    kind = draw(st.sampled_from(["str", "str", "num", "lit", "arr", "obj"]
                                if depth < 2 else ["str", "num", "lit"]))
    if kind == "str":
        return _json_string(draw)
    if kind == "num":
        return draw(_NUMBERS)
    if kind == "lit":
        return draw(st.sampled_from(["null", "true", "false"]))
    ws = draw(st.sampled_from(["", " ", "\n\t"]))
    items = draw(st.lists(_value(depth + 1), max_size=3))
    if kind == "arr":
        return "[" + ws + ("," + ws).join(items) + "]"
    names = [_json_string(draw) for _ in items]
    return "{" + ",".join(f"{n}{ws}:{ws}{v}" for n, v in zip(names, items, strict=True)) + "}"


_SIMPLE_JSON = _SIMPLE.map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"')


@st.composite
def request_body(draw) -> bytes:
    """A request of the shape the fast path takes (half the time), or anything near it."""
    clean = draw(st.booleans())
    members = []
    for key in draw(st.permutations(["jsonrpc", "method", "params", "id"])):
        if draw(st.integers(0, 9 if not clean else 40)) == 0:
            continue  # a member left out
        if key == "jsonrpc":
            value = draw(st.sampled_from(['"2.0"'] * 8 + ['"2.00"', '2.0', '"1.0"']))
        elif key == "method":
            value = draw(st.sampled_from(['"mq_get_size"', '"mq_fetch"', '"which"',
                                          '"nosuch"', '""'])) \
                if draw(st.booleans()) else _json_string(draw)
        elif key == "params" and clean:
            items = [draw(_SIMPLE_JSON) for _ in range(draw(st.integers(0, 3)))]
            if draw(st.booleans()):
                value = "[" + ",".join(items) + "]"
            else:
                value = "{" + ",".join(f"{draw(_SIMPLE_JSON)}:{v}" for v in items) + "}"
        elif key == "params":
            value = draw(st.one_of(_value(1), st.sampled_from(['["q1"]', '{"name":"q1"}',
                                                               '["q1","3"]', "[]", "{}"])))
        elif clean:
            value = draw(st.one_of(st.integers(-999999999, 999999999).map(str),
                                   _SIMPLE_JSON))
        else:
            value = draw(st.one_of(_NUMBERS, st.just('"abc"'), _value(2)))
        name = key
        if draw(st.integers(0, 14 if not clean else 60)) == 0:
            name = draw(st.sampled_from(["ID", "Method", "extra", "jsonrpc", "id"]))
        ws = draw(st.sampled_from(["", "", " ", "\n\t"]))
        members.append(f'"{name}"{ws}:{ws}{value}')
    ws = draw(st.sampled_from(["", " ", "\r\n", "\t "]))
    return ("{" + ws + ("," + ws).join(members) + ws + "}").encode()
