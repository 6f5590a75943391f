"""Hypothesis: garbage interleaved with valid requests never hides, repeats or wedges them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mi_fifo.framer import _RESYNC_TAIL, Framer, Request

MAX_REQUEST = 4096
# JSON-ish bytes so the junk opens strings, containers and fake headers
JUNK_ALPHABET = b'{}[]":,\\ \n\tab:.0-/e\x00\xff'
junk = st.binary(max_size=60).map(lambda b: bytes(JUNK_ALPHABET[x % len(JUNK_ALPHABET)] for x in b))


@st.composite
def streams(draw):
    items = draw(st.lists(st.one_of(st.just(None), junk), min_size=1, max_size=12))
    parts, expected = [], []
    for i, item in enumerate(items):
        if item is None:
            body = b'{"id":%d,"s":"x:y{[\\"","a":[1,{}]}' % i
            parts.append(b":r%d:%s" % (i, body))
            expected.append((f"r{i}", body))
        else:
            parts.append(item)
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts, expected


@settings(max_examples=400, deadline=None)
@given(streams())
def test_every_request_outside_the_garbage_is_framed_exactly_once(case):
    data, cuts, expected = case
    f = Framer(MAX_REQUEST, 1.0)
    events = []
    bounds = [0, *cuts, len(data)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        events += f.feed(data[a:b], 0.0)
        # held back: at most one unfinished request, or the tail a request start may hide
        assert f.buffered <= max(MAX_REQUEST, _RESYNC_TAIL)
    events += f.poll(10.0)
    assert not f.pending
    got = [(ev.reply_name, ev.body) for ev in events if isinstance(ev, Request)]
    for req in expected:
        assert got.count(req) == 1, (req, got)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise_and_keep_the_buffer_bounded(chunks):
    f = Framer(256, 1.0)
    t = 0.0
    for chunk in chunks:
        f.feed(chunk, t)
        f.poll(t)
        t += 0.3
        assert f.buffered <= 256 + 300 + 400
    f.poll(t + 5)
    assert not f.pending
    served = [ev for ev in f.feed(b":r:{}", t + 10) if isinstance(ev, Request)]
    assert served == [Request("r", b"{}")]
