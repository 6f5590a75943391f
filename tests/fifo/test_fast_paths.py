"""The per-request fast paths give exactly what the general paths give.

The framer answers a whole request in one write with one regex and one C scan, and the
reply side opens the reply FIFO without an lstat first; these pin that the shortcuts change
no result (framing, refusals) and refuse what the slow checks refused."""

from __future__ import annotations

import os
import socket
import time

import pytest

from mi_fifo.framer import Framer
from mi_fifo.replyfifo import ReplyError, open_reply, reply_path, reply_prefix, write_reply

REQ = b'{"jsonrpc":"2.0","method":"which","params":{},"id":"1"}'

# whole writes that take (or start on) the fast path, and near misses that must not
STREAMS = [
    b":r:" + REQ,
    b":r:" + REQ + b"\n",
    b" \r\n:r: \t" + REQ + b"\r\n",
    b":a:{}:b:[1]",
    b":a:{}  garbage :b:[1]",
    b":a:{}\n:b:[1",             # second request unfinished: held back
    b":a.b:" + REQ,              # forbidden name
    b"::" + REQ,                 # empty name: run, no reply
    b":r:" + REQ[:-1],           # unfinished
    b":r:{\"a\":}",              # invalid
    b":r:[NaN]",                 # valid for the framer, refused later by the MI core
    b":" + b"n" * 255 + b":{}",  # longest name
    b":" + b"n" * 256 + b":{}",  # name too long: not a header
    b":r:" + b"[" + b"1," * 40 + b"1]",  # over max_request
    # several whole requests in one read (concurrent clients): each by the shortcut
    b":a:{}\n:b:[1]\n :c: {\"x\":1}\n",
    b":a:{}:b.x:[1]:c:{}",         # a forbidden name between two good ones
    b":a:{}:b:[NaN]:c:{}",         # the middle one is the MI core's -32700, not framing's
    b":a:{}:b:" + b"[" + b"1," * 40 + b"1]:c:{}",  # an oversize one in the middle
    b":a:{}:b:{\"x\":}:c:{}",     # an invalid one in the middle
    b":a:{}:b:{\"x\":1",          # the last one unfinished: held back
]


def _byte_by_byte(data: bytes, max_request: int) -> list:
    """The general path only: one byte per feed never completes a request in one write."""
    f = Framer(max_request, 1.0)
    events = [ev for i in range(len(data)) for ev in f.feed(data[i:i + 1], 0.0)]
    return events + f.poll(5.0)


@pytest.mark.parametrize("data", STREAMS)
def test_whole_write_frames_like_byte_by_byte(data):
    f = Framer(64, 1.0)
    events = f.feed(data, 0.0) + f.poll(5.0)
    slow = _byte_by_byte(data, 64)

    # Garbage byte counts may differ with read boundaries; requests and answers may not.
    def kept(evs):
        return [ev for ev in evs if type(ev).__name__ != "Garbage"]

    assert kept(events) == kept(slow)


def test_reply_prefix_joins_like_os_path_join(tmp_path):
    for d in (str(tmp_path), str(tmp_path) + "/", "", tmp_path):
        joined = os.path.join(os.fsencode(d), b"name")
        assert reply_path(reply_prefix(d), "name") == joined
    assert reply_prefix(b"/tmp") + b"name" == b"/tmp/name"


def test_reply_to_a_socket_is_refused_at_once(short_tmp):
    path = short_tmp / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen()
        # opening a socket fails with ENXIO, like a FIFO without reader: it must not be
        # waited on as if a reader could still come (the schedule would make it a wait)
        with pytest.raises(ReplyError, match="not a FIFO"):
            open_reply(reply_prefix(short_tmp), "sock", schedule=(30.0,))


def test_reply_fifo_replaced_by_symlink_is_refused(short_tmp):
    os.mkfifo(short_tmp / "real")
    os.symlink(short_tmp / "real", short_tmp / "link")
    rfd = os.open(short_tmp / "real", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(ReplyError, match="symlink"):
            open_reply(reply_prefix(short_tmp), "link")
    finally:
        os.close(rfd)


def test_reply_written_in_one_piece_and_closed(short_tmp):
    os.mkfifo(short_tmp / "r")
    rfd = os.open(short_tmp / "r", os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_reply(open_reply(reply_prefix(short_tmp), "r"), b"x" * 100 + b"\n")
        assert os.read(rfd, 1000) == b"x" * 100 + b"\n"
        assert os.read(rfd, 1000) == b""  # the writer is closed: end of file
    finally:
        os.close(rfd)


def test_reply_bigger_than_the_pipe_is_written_whole(short_tmp):
    os.mkfifo(short_tmp / "r")
    rfd = os.open(short_tmp / "r", os.O_RDONLY | os.O_NONBLOCK)
    data = os.urandom(300_000)
    got = bytearray()
    try:
        wfd = open_reply(reply_prefix(short_tmp), "r")
        pid = os.fork()
        if pid == 0:  # the writer side in a child, so this side can read concurrently
            try:
                write_reply(wfd, data)
            finally:
                os._exit(0)
        os.close(wfd)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = os.read(rfd, 65536)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            if not chunk:
                break
            got += chunk
        os.waitpid(pid, 0)
    finally:
        os.close(rfd)
    assert bytes(got) == data


def test_reply_path_of_128_bytes_is_allowed_129_refused():
    prefix = b"/tmp/"
    assert len(reply_path(prefix, "n" * 123)) == 128
    with pytest.raises(ReplyError, match="longer than 128"):
        reply_path(prefix, "n" * 124)


def test_back_to_back_requests_all_come_decoded():
    """With the MI core's scanner, every whole request of a read is decoded while framed
    (not only the first), so the core never parses them a second time."""
    from mi_fifo.framer import UNPARSED, Request
    from mi_server.mi.jsonvalues import parse, scan_value

    f = Framer(65536, 1.0, scan_value)
    events = f.feed(b":a:" + REQ + b"\n:b:" + REQ + b":c:[1,2]\n", 0.0)
    assert [type(ev) for ev in events] == [Request] * 3
    for ev in events:
        assert ev.value is not UNPARSED
        assert repr(ev.value) == repr(parse(ev.body))
