"""The datagram listener's compiled fast path (mi_server/datagram/_fastpath.c) against the
Python path it stands in for, in this process, over real sockets and the real MI core.

Two listeners over two arenas holding the same items: one with the compiled path (its
`serve` loop, and `Listener.serve` for what it hands back, as Listener.run does), one with
the Python path alone (`recvfrom`, `Listener.serve`).  The same datagrams must get the
same replies and leave the same queues.  Whole servers both ways: every test using the
dgram_servers fixture runs twice (tests/datagram/conftest.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_server.datagram import fastpath
from mi_server.datagram.protocol import DatagramProtocol
from mi_server.datagram.server import Listener
from mi_server.engine import Arena
from mi_server.engine.spec import QueueSpec
from mi_server.mi import build_core
from mi_server.mi.context import MIContext
from mi_server.mi.core import TOO_LARGE
from tests.jsonrpc_requests import request_body

serve = fastpath._serve
# without the extension these skip, and test_fastpath_build.py fails and says why
pytestmark = pytest.mark.skipif(serve is None, reason="mi_server.datagram._fastpath was not built")
INTERNAL_ERROR = b"500 Internal error"


def req(method: str, params: str = '["q1"]', id_: str = "1") -> bytes:
    return b'{"jsonrpc":"2.0","method":"%s","params":%s,"id":%s}' % (
        method.encode(), params.encode(), id_.encode())


class Side:
    """One listener over its own arena and UDP socket (not running: driven by the test)."""

    def __init__(self, compiled: bool, budget: int = 65457) -> None:
        self.arena = Arena.create(f"mqdgfast{os.getpid()}_{time.monotonic_ns()}", 1 << 22,
                                  [QueueSpec("q1"), QueueSpec("q2")])
        self.core = build_core(MIContext(engine=self.arena, started=0.0, argv=[],
                                         processes=list, stop=lambda: None))
        self.staged: list[tuple] = []  # what the compiled path handed the MI core
        checked = self.core.stage_checked_held

        def counted(method, params, id_text, budget):
            self.staged.append((method, params, id_text, budget))
            return checked(method, params, id_text, budget)

        self.protocol = DatagramProtocol(self.core.stage_held, self.core.finish, TOO_LARGE,
                                         budget, checked=counted)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        old = os.environ.get(fastpath.ENV)
        os.environ[fastpath.ENV] = "1" if compiled else "0"
        try:
            self.listener = Listener(self.sock, self.protocol, budget)
        finally:
            if old is None:
                os.environ.pop(fastpath.ENV)
            else:
                os.environ[fastpath.ENV] = old
        assert (self.listener.fast is not None) == compiled
        os.set_blocking(self.listener.read_fd, False)  # EAGAIN once nothing is left
        self.handed_back: list[bytes] = []

    def fast_args(self) -> tuple:
        lst, p = self.listener, self.protocol
        return (lst.read_fd, self.sock.fileno(), lst.read_size,
                (p.checked, p.outcome, lst.drop, lst.settle_failed), lst.stop_flag)

    def run(self) -> None:
        """Serve every datagram waiting, as Listener.run does."""
        lst = self.listener
        while True:
            try:
                if lst.fast is not None:
                    got = lst.fast(*self.fast_args())
                    assert type(got) is tuple, got  # neither a signal nor a failure here
                    self.handed_back.append(got[0])
                    data, address = got
                else:
                    data, address = lst.reader.recvfrom(lst.read_size)
            except BlockingIOError:
                return
            lst.serve(data, address)

    def sizes(self) -> list[int]:
        return [self.arena.size("q1"), self.arena.size("q2")]

    def close(self) -> None:
        self.listener.reader.close()
        os.close(self.listener.null_fd)
        self.sock.close()
        self.arena.close()
        self.arena.unlink()


class Pair:
    def __init__(self, budget: int = 65457) -> None:
        self.fast = Side(True, budget)
        self.slow = Side(False, budget)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))

    def add(self, queue: str, key: str, value: str) -> None:
        for side in (self.fast, self.slow):
            side.arena.add(queue, key, value)

    def both(self, datagram: bytes) -> tuple[list[bytes], list[bytes]]:
        """The replies each side sends to `datagram`."""
        out = []
        for side in (self.fast, self.slow):
            self.client.sendto(datagram, side.address)
            side.run()
            out.append(self.replies())
        return out[0], out[1]

    def replies(self) -> list[bytes]:
        got = []
        self.client.setblocking(False)
        try:
            while True:
                got.append(self.client.recv(1 << 17))
        except BlockingIOError:
            return got
        finally:
            self.client.setblocking(True)

    def close(self) -> None:
        self.client.close()
        self.fast.close()
        self.slow.close()


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def test_the_common_requests_are_served_by_it_with_the_python_paths_replies(pair):
    pair.add("q1", "k", "v")
    for datagram, reply in [
        (req("mq_get_size"), b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":1}},'
                             b'"id":1}'),
        (req("mq_fetch", '{"name":"q1"}', '"x"') + b"\n",
         b'{"jsonrpc":"2.0","result":{"Item":{"key":"k","value":"v"}},"id":"x"}'),
        (b' \t{"id":7,"method":"nosuch","jsonrpc":"2.0"}',
         b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":7}'),
    ]:
        fast, slow = pair.both(datagram)
        assert fast == slow == [reply]
    assert pair.fast.handed_back == []  # all three taken by the C loop
    assert [s[:3] for s in pair.fast.staged] == [
        ("mq_get_size", ["q1"], "1"), ("mq_fetch", (("name", "q1"),), '"x"'),
        ("nosuch", None, "7")]
    assert {s[3] for s in pair.fast.staged} == {65457}
    assert pair.fast.sizes() == pair.slow.sizes() == [0, 0]


@pytest.mark.parametrize("datagram", [
    b"",  # no reply
    req("mq_get_size").replace(b',"id":1', b""),  # a notification
    b"[" + req("mq_get_size") + b"]",  # a batch
    req("mq_get_size") + b"\xff",  # not UTF-8 after the value: 400 the Python way
    req("mq_get_size").replace(b'"q1"', b'"q\\u0031"'),  # an escape
    req("mq_get_size").replace(b'"id":1', b'"ID":1'),  # a case variant
    b"not json",
], ids=["empty", "notification", "batch", "non-utf8-tail", "escape", "member-case", "junk"])
def test_what_it_does_not_take_comes_back_untouched_and_is_answered_the_python_way(
        pair, datagram):
    fast, slow = pair.both(datagram)
    assert fast == slow
    assert pair.fast.handed_back == [datagram]
    assert pair.fast.staged == []


def test_a_request_over_the_buffer_is_left_to_python():
    p = Pair(budget=200)
    try:
        body = req("mq_get_size")
        at, over = body + b" " * (200 - len(body)), body + b" " * (201 - len(body))
        fast, slow = p.both(at)
        assert fast == slow and fast[0].startswith(b'{"jsonrpc":"2.0","result"')
        assert p.fast.handed_back == []
        fast, slow = p.both(over)
        assert fast == slow == [b"400 Parse_error"]
        assert p.fast.handed_back == [over]
    finally:
        p.close()


def test_a_reply_over_the_buffer_is_500_internal_error(caplog):
    body = req("mq_get_size")  # 63 bytes; its reply 66
    p = Pair(budget=65)
    try:
        with caplog.at_level(logging.WARNING, logger="mi_datagram"):
            fast, slow = p.both(body)
        assert fast == slow == [INTERNAL_ERROR]
        assert p.fast.handed_back == [] and len(p.fast.staged) == 1  # served by C
        assert caplog.messages == ["datagram: reply of 66 bytes is over "
                                   "datagram.buffer_size (65): answered 500"] * 2
    finally:
        p.close()


@pytest.mark.parametrize("params", ['["q1"]', '["q1","5"]', '{"name":"q1","limit":"100"}'],
                         ids=["single", "bulk", "named-bulk"])
def test_a_fetch_reply_over_the_buffer_is_500_and_the_items_stay(params, caplog):
    p = Pair(budget=600)
    try:
        items = [(f"k{i}", ("x" * 700 if i == 0 else "y" * 150)) for i in range(5)]
        for k, v in items:
            p.add("q1", k, v)
        with caplog.at_level(logging.INFO, logger="mi_datagram"):
            fast, slow = p.both(req("mq_fetch", params))
        assert fast == slow == [INTERNAL_ERROR]
        assert p.fast.handed_back == [] and len(p.fast.staged) == 1  # served by C
        assert p.fast.sizes() == p.slow.sizes() == [5, 0]
        assert [m for m in caplog.messages if "buffer_size" in m] == [
            "datagram: reply over datagram.buffer_size (600 bytes): answered 500, "
            "nothing fetched"] * 2
        assert p.fast.arena.fetch_many("q1", 5) == items  # nothing lost, the order unchanged
    finally:
        p.close()


def test_a_fetch_whose_reply_cannot_be_sent_is_undone(short_tmp, caplog):
    """Unix senders: one unbound (no address), one whose queue is full (EAGAIN)."""
    side = _UnixSide(short_tmp)
    try:
        side.arena.add("q1", "a", "1")
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        deaf.bind(str(short_tmp / "deaf.sock"))
        anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with deaf, anon, caplog.at_level(logging.WARNING, logger="mi_datagram"):
            anon.sendto(req("mq_fetch"), side.path)
            side.run()
            assert caplog.messages == ["datagram reply to 'an unbound socket' dropped: the "
                                       "sender has no address"]
            side.listener.drops.next_at = 0.0  # the next drop logs at once
            for _ in range(5):  # never read: its queue (ten datagrams) fills
                for _ in range(8):  # within the listener's own queue
                    deaf.sendto(req("mq_get_size"), side.path)
                side.run()
            deaf.sendto(req("mq_fetch"), side.path)
            side.run()
            assert side.handed_back == []
            assert len(side.staged) == 42 and side.staged[-1][0] == "mq_fetch"
            assert caplog.messages[1] == (
                f"datagram reply to {str(short_tmp / 'deaf.sock')!r} dropped: the sender "
                "does not read its replies")
            assert side.listener.drops.suppressed > 0  # the rest within the interval
        assert side.arena.size("q1") == 1
        assert side.arena.fetch("q1") == ("a", "1")
    finally:
        side.close()


def test_a_send_error_without_an_errno_is_logged_by_its_text(short_tmp, caplog):
    """Python refuses a 108-byte AF_UNIX path itself ("AF_UNIX path too long", no errno):
    that is what the line says, not "no address" (the meaning of errno 0 here)."""
    side = _UnixSide(short_tmp)
    try:
        with caplog.at_level(logging.WARNING, logger="mi_datagram"):
            assert side.listener.send(b"reply", "/" + "a" * 107) is False
        assert caplog.messages == [f"datagram reply to {'/' + 'a' * 107!r} dropped: AF_UNIX "
                                   "path too long"]
    finally:
        side.close()


class _UnixSide(Side):
    """A compiled-path listener on a unix datagram socket."""

    def __init__(self, directory: Path) -> None:
        super().__init__(True)
        self.sock.close()
        self.listener.reader.close()
        self.path = str(directory / "mi.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.close(self.listener.null_fd)
        self.listener = Listener(self.sock, self.protocol, 65457)
        os.set_blocking(self.listener.read_fd, False)


def test_a_settle_that_fails_is_one_warning_and_the_loop_goes_on(pair, caplog):
    calls = []

    def settle(sent):
        calls.append(sent)
        raise RuntimeError("lease ran out")

    p = pair.fast.protocol
    p.checked = lambda method, params, id_text, budget: (b"held", settle)
    with caplog.at_level(logging.WARNING, logger="mi_datagram"):
        pair.client.sendto(req("mq_fetch"), pair.fast.address)
        pair.client.sendto(req("mq_fetch"), pair.fast.address)
        pair.fast.run()
    assert pair.replies() == [b"held", b"held"]
    assert calls == [True, True]
    assert caplog.messages == ["datagram: a held fetch could not be committed after its "
                               "reply was sent: lease ran out"] * 2


def test_a_failing_callback_comes_back_as_its_exception_and_nothing_stays_held(pair):
    settled = []

    def outcome(work):
        raise ValueError("bug")

    p = pair.fast.protocol
    p.checked = lambda *a: object()  # neither a reply nor a held fetch: outcome decides
    p.outcome = outcome
    pair.client.sendto(req("mq_get_size"), pair.fast.address)
    got = serve(*pair.fast.fast_args())
    assert type(got) is ValueError and str(got) == "bug"
    # a malformed answer with a settle: the settle is undone
    p.outcome = lambda work: (42, settled.append)
    pair.client.sendto(req("mq_get_size"), pair.fast.address)
    got = serve(*pair.fast.fast_args())
    assert type(got) is TypeError and settled == [False]
    assert pair.replies() == []


def test_a_set_stop_flag_returns_before_reading(pair):
    pair.client.sendto(req("mq_get_size"), pair.fast.address)
    pair.fast.listener.stop_flag[0] = 1
    assert serve(*pair.fast.fast_args()) is None
    assert pair.fast.staged == []  # still queued


def test_bad_arguments_are_refused_before_any_read(pair):
    pair.client.sendto(req("mq_get_size"), pair.fast.address)
    read_fd, send_fd, size, ctx, stop = pair.fast.fast_args()
    for args, error in [((read_fd, send_fd, 1, ctx, stop), ValueError),
                        ((read_fd, send_fd, size, ctx[:3], stop), TypeError),
                        ((read_fd, send_fd, size, (*ctx[:3], 5), stop), ValueError),
                        ((read_fd, send_fd, size, ctx, bytearray()), ValueError)]:
        with pytest.raises(error):
            serve(*args)
    assert pair.fast.listener.reader.recv(100).startswith(b'{"jsonrpc"')  # nothing read


# -- stop: SIGTERM while serving or asleep ---------------------------------------------------

def _listener_process(path: str, conn, stop_in_request: bool) -> None:
    """A child: a compiled-path Listener.run on a unix socket; the MI command of its first
    request sends this process SIGTERM when `stop_in_request`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    calls = []

    def checked(method, params, id_text, budget):
        calls.append(method)
        if stop_in_request:
            os.kill(os.getpid(), signal.SIGTERM)
        return b"reply %d" % len(calls)

    protocol = DatagramProtocol(None, None, TOO_LARGE, 65457, checked=checked)
    os.environ.pop(fastpath.ENV, None)
    lst = Listener(sock, protocol, 65457)
    conn.send(lst.fast is not None)
    lst.run()
    conn.send(calls)


@pytest.mark.parametrize("stop_in_request", [True, False], ids=["in-request", "asleep"])
def test_sigterm_finishes_the_datagram_in_hand_and_stops(short_tmp, stop_in_request):
    path = str(short_tmp / "mi.sock")
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_listener_process, args=(path, child, stop_in_request))
    proc.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.bind(str(short_tmp / "client.sock"))
    client.settimeout(5)
    try:
        assert parent.poll(10) and parent.recv() is True  # the compiled path is on
        if stop_in_request:
            client.sendto(req("mq_get_size"), path)
            try:  # queued behind it, unless the listener has already stopped and gone
                client.sendto(req("mq_get_size", id_="2"), path)
            except ConnectionRefusedError:
                pass
            assert client.recv(100) == b"reply 1"
        else:
            time.sleep(0.3)  # asleep in recvfrom
            os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        assert proc.exitcode == 0
        assert parent.recv() == (["mq_get_size"] if stop_in_request else [])
    finally:
        client.close()
        if proc.is_alive():
            proc.kill()
            proc.join()


# -- property: the same replies as the Python path ------------------------------------------
# (the bodies: tests/jsonrpc_requests.py)

@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=request_body(),
       tail=st.sampled_from([b"", b"\n", b" \r\n", b"garbage", b"\x00", b"\xff", b"}"]))
def test_whatever_it_serves_it_answers_as_the_python_path(pair, body, tail):
    for side in (pair.fast, pair.slow):  # the same items on both sides
        while side.arena.size("q1") < 3:
            side.arena.add("q1", f"k{side.arena.size('q1')}", "v")
    handed, staged = len(pair.fast.handed_back), len(pair.fast.staged)
    fast, slow = pair.both(body + tail)
    assert fast == slow
    assert pair.fast.sizes() == pair.slow.sizes()
    if len(pair.fast.handed_back) == handed:  # it served it: one MI call, one reply
        assert len(pair.fast.staged) == staged + 1 and len(fast) == 1
    else:  # handed back whole, nothing run
        assert pair.fast.handed_back[handed:] == [body + tail]
        assert len(pair.fast.staged) == staged
