"""The sans-io framer against every framing rule of docs/wire.md ("FIFO"), fed by hand."""

from __future__ import annotations

import pytest

from mi_fifo.framer import Framer, Garbage, Oversize, ParseError, Request

REQ = b'{"jsonrpc":"2.0","method":"which","params":{},"id":"1"}'
CLI = b':opensips_fifo_reply_123_1700000000_5:{"jsonrpc": "2.0", "id": "10533", ' \
      b'"method": "which", "params": {}}'


def served(events) -> list[tuple]:
    """Events that lead to an answer or a run, without the garbage accounting."""
    out = []
    for ev in events:
        if isinstance(ev, Request):
            out.append(("req", ev.reply_name, ev.body))
        elif isinstance(ev, ParseError):
            out.append(("parse", ev.reply_name))
        elif isinstance(ev, Oversize):
            out.append(("big", ev.reply_name))
    return out


def frame(data: bytes, max_request: int = 65536) -> tuple[list[tuple], Framer]:
    f = Framer(max_request, 1.0)
    events = f.feed(data, 0.0)
    return served(events), f


CASES = [
    ("opensips-cli request", CLI,
     [("req", "opensips_fifo_reply_123_1700000000_5", CLI.split(b":", 2)[2])]),
    ("no newline needed", b":r:" + REQ, [("req", "r", REQ)]),
    ("trailing newline", b":r:" + REQ + b"\n", [("req", "r", REQ)]),
    ("leading whitespace", b" \n\t:r:" + REQ, [("req", "r", REQ)]),
    ("whitespace after the header", b":r: \n" + REQ, [("req", "r", REQ)]),
    ("two requests in one write", b":a:{}:b:[1]", [("req", "a", b"{}"), ("req", "b", b"[1]")]),
    ("batch array", b':r:[{"a":1},{"b":2}]', [("req", "r", b'[{"a":1},{"b":2}]')]),
    ("braces inside strings", b':r:{"x":"}{][:a:{"}', [("req", "r", b'{"x":"}{][:a:{"}')]),
    ("escaped quotes", b':r:{"x":"\\"}"}:s:{}',
     [("req", "r", b'{"x":"\\"}"}'), ("req", "s", b"{}")]),
    ("pretty-printed", b':r:{\n  "a": [\n    1,\n    2\n  ]\n}\n',
     [("req", "r", b'{\n  "a": [\n    1,\n    2\n  ]\n}')]),
    ("empty name runs without reply", b"::{}", [("req", "", b"{}")]),
    ("utf-8 passes through", ':r:{"k":"é"}'.encode(), [("req", "r", '{"k":"é"}'.encode())]),
    ("invalid JSON answered at once", b':r:{"a" 1}', [("parse", "r")]),
    ("invalid then valid", b':r:{"a":}:s:{}', [("parse", "r"), ("req", "s", b"{}")]),
    ("not an object or array", b":r:42 :s:{}", [("parse", "r"), ("req", "s", b"{}")]),
    ("trailing comma is invalid", b":r:[1,]:s:{}", [("parse", "r"), ("req", "s", b"{}")]),
    ("forbidden name ../x", b":../x:{}", []),
    ("forbidden name a/b", b":a/b:{}", []),
    ("forbidden name a.b", b":a.b:{}", []),
    ("forbidden name a\\b", b":a\\b:{}", []),
    ("forbidden name then valid", b":a.b:{}:c:{}", [("req", "c", b"{}")]),
    ("forbidden name with bad JSON: no reply", b":a.b:{x}:c:{}", [("req", "c", b"{}")]),
    ("garbage before", b"hello world:r:{}", [("req", "r", b"{}")]),
    ("garbage with colons before", b"a:b:c::d:{}", [("req", "d", b"{}")]),
    ("unbalanced JSON then request (Kamailio wedge)",
     b'{"jsonrpc":"2.0","method":"mqueue.get_size",\n:r:{}', [("req", "r", b"{}")]),
    ("unfinished request then request", b':a:{"x":"abc:b:{"k":1}',
     [("parse", "a"), ("req", "b", b'{"k":1}')]),
    ("request glued into a string", b':a:{"x":":b:{"k":1}"}',
     [("parse", "a"), ("req", "b", b'{"k":1}')]),
    ("header sharing a colon", b":abc:b:{}", [("parse", "abc"), ("req", "b", b"{}")]),
    ("name with control char is not a header", b":a\nb:{}:c:{}", [("req", "c", b"{}")]),
    ("NaN is what json accepts", b':r:{"a":NaN,"b":-Infinity}',
     [("req", "r", b'{"a":NaN,"b":-Infinity}')]),
    ("numbers", b':r:[0,-1.5e+3,2E7,0.25]', [("req", "r", b"[0,-1.5e+3,2E7,0.25]")]),
    ("a leading zero is taken, as cJSON takes it", b":r:[01]", [("req", "r", b"[01]")]),
    ("a leading zero then garbage is invalid", b":r:[01x]", [("parse", "r")]),
    ("bad escape is invalid", b':r:["\\x"]', [("parse", "r")]),
    ("unicode escape", b':r:["\\u00e9"]', [("req", "r", b'["\\u00e9"]')]),
    # as the MI core and cJSON: raw control characters inside strings are accepted
    ("raw control chars in a string are framed", b':r:["a\x01\t\n"]',
     [("req", "r", b'["a\x01\t\n"]')]),
]


@pytest.mark.parametrize("title,data,expected", CASES, ids=[c[0] for c in CASES])
def test_framing_rules(title, data, expected):
    got, f = frame(data)
    assert got == expected
    assert not f.pending or f.buffered < len(data)


@pytest.mark.parametrize("title,data,expected", CASES, ids=[c[0] for c in CASES])
def test_framing_is_the_same_whatever_the_read_boundaries(title, data, expected):
    # every split point, and byte by byte
    for cut in range(1, len(data)):
        f = Framer(65536, 1.0)
        events = f.feed(data[:cut], 0.0) + f.feed(data[cut:], 0.0) + f.poll(5.0)
        assert served(events) == expected, cut
    f = Framer(65536, 1.0)
    events = [ev for i in range(len(data)) for ev in f.feed(data[i:i + 1], 0.0)] + f.poll(5.0)
    assert served(events) == expected


def test_unfinished_request_waits_then_is_a_parse_error_after_idle_timeout():
    f = Framer(65536, 1.0)
    assert f.feed(b':r:{"a":tr', 10.0) == []
    assert f.pending and f.deadline() == 11.0
    assert f.poll(10.9) == []
    f.feed(b"u", 10.5)  # new bytes restart the silence
    assert f.poll(11.2) == []
    assert served(f.poll(11.5)) == [("parse", "r")]
    assert not f.pending and f.deadline() is None
    assert served(f.feed(b":s:{}", 12.0)) == [("req", "s", b"{}")]


def test_unfinished_header_is_dropped_after_idle_timeout():
    f = Framer(65536, 1.0)
    assert f.feed(b":half_a_name", 0.0) == []
    events = f.poll(1.0)
    assert served(events) == [] and isinstance(events[0], Garbage)
    assert not f.pending


def test_idle_timeout_rescans_held_bytes_for_a_complete_request():
    f = Framer(65536, 1.0)
    assert f.feed(b':a:{"x":":b:{}', 0.0) == []
    assert served(f.poll(1.0)) == [("parse", "a"), ("req", "b", b"{}")]


def test_oversize_request_is_refused_and_skipped_without_buffering():
    f = Framer(1000, 1.0)
    events = f.feed(b':big:{"a":"', 0.0)
    chunk = b"x" * 4096
    for _ in range(50):
        events += f.feed(chunk, 0.0)
        assert f.buffered <= 1000 + 4096
    events += f.feed(b'"}:next:{}', 0.0)
    assert served(events) == [("big", "big"), ("req", "next", b"{}")]


def test_oversize_complete_in_one_read_is_refused():
    body = b'{"a":"' + b"x" * 2000 + b'"}'
    got, _ = frame(b":big:" + body + b":n:{}", max_request=1000)
    assert got == [("big", "big"), ("req", "n", b"{}")]


def test_request_exactly_at_the_limit_is_served():
    data = b":r:" + b'{"a":"' + b"x" * 100 + b'"}'
    got, _ = frame(data, max_request=len(data))
    assert got == [("req", "r", data[3:])]
    got, _ = frame(data, max_request=len(data) - 1)
    assert got == [("big", "r")]


def test_oversize_with_invalid_json_resyncs():
    f = Framer(100, 1.0)
    events = f.feed(b':big:["' + b"y" * 200, 0.0) + f.feed(b'" x :n:{}', 0.0)
    assert served(events) == [("big", "big"), ("req", "n", b"{}")]


def test_garbage_stream_keeps_a_bounded_buffer_and_never_wedges():
    f = Framer(65536, 1.0)
    junk = bytes(range(256)) * 64
    for _ in range(20):
        assert served(f.feed(junk, 0.0)) == []
        assert f.buffered <= 400
    assert served(f.feed(b"\n:r:{}", 0.0))[-1] == ("req", "r", b"{}")


def test_endless_whitespace_after_a_header_is_oversize_not_buffered():
    # `:a:` then whitespace that never ends: held without bound before (and rescanned
    # on every read); it is a request over max_request like any other.
    f = Framer(1000, 1.0)
    events = f.feed(b":a:", 0.0)
    for _ in range(50):
        events += f.feed(b" " * 4096, 0.0)
        assert f.buffered <= 1000 + 4096
    events += f.feed(b'{"x":1}:n:{}', 0.0)
    assert served(events) == [("big", "a"), ("req", "n", b"{}")]


def test_deep_nesting_does_not_raise():
    data = b":r:" + b"[" * 5000 + b"]" * 5000
    got, _ = frame(data)
    assert got == [("req", "r", data[3:])]


# An oversize request its writer never finished, then another writer's whole request (the
# fuzzing find): the second must be served from its own start, not framed from its middle
# (reply name '"mq_get_size","params"'), whatever the read boundaries.  The abandoned
# request is cut off in each JSON context the skip can be in when the next bytes arrive.
NEXT = b':b:{"jsonrpc":"2.0","method":"mq_get_size","params":["q"],"id":1}'
ABANDONED = {
    "in a string": b':a:{"jsonrpc":"2.0","method":"mq_add","params":["q","k","' + b"x" * 300,
    "in a key": b':a:{"jsonrpc":"2.0","method":"mq_add","params":{"' + b"k" * 300,
    "in a number": b':a:{"method":"mq_add","params":[' + b"1," * 150 + b"12",
    "after a comma": b':a:{"method":"mq_add","params":[' + b"1," * 150,
    "in whitespace": b":a:" + b" " * 300,
}
WANT = [("big", "a"), ("req", "b", NEXT[3:])]


def frame_split(data: bytes, cuts: tuple[int, ...], max_request: int = 200) -> list[tuple]:
    """Feed `data` cut at `cuts` (the last piece 0.2 s later), then let it time out."""
    f = Framer(max_request, 1.0)
    bounds = [0, *cuts, len(data)]
    events = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        events += f.feed(data[a:b], 0.2 if k == len(bounds) - 2 else 0.0)
    events += f.poll(5.0)
    assert not f.pending
    return served(events)


@pytest.mark.parametrize("where", list(ABANDONED))
def test_after_an_abandoned_oversize_request_the_next_is_framed_from_its_start(where):
    data = ABANDONED[where] + NEXT
    for cut in range(len(data) + 1):
        assert frame_split(data, (cut,)) == WANT, cut
    for first in range(0, len(data), 7):  # two cuts: a sample of the pairs
        for second in range(first, len(data) + 1, 11):
            assert frame_split(data, (first, second)) == WANT, (first, second)


def test_an_oversize_request_that_is_finished_is_still_skipped_whole():
    # the window kept while skipping holds a request start of its own ("...:x:{..."):
    # once the big request ends, what it held is dropped, not framed
    big = b':a:{"k":"' + b"y" * 300 + b':x:{}' + b'"}'
    data = big + b":n:{}"
    for cut in range(len(data) + 1):
        assert frame_split(data, (cut,)) == [("big", "a"), ("req", "n", b"{}")], cut


def test_skipping_an_oversize_request_keeps_at_most_max_request_bytes():
    f = Framer(1000, 1.0)
    f.feed(b':a:{"k":"', 0.0)
    for _ in range(20):
        f.feed(b"z" * 4096, 0.0)
        assert f.buffered <= 1000
