"""The compiled fast path (mi_fifo/_fastpath.c) against the Python path it stands in for.

`serve` is driven in this process over a real pipe (its write end closed, so it returns at
end-of-file) and real reply FIFOs.  Whatever it serves must reach the MI core exactly as
the Python path would: the same reply name, and `stage_checked` called with the very
(method, params, id text) that `MICore._one` hands to `_dispatch` after the envelope
checks; a command with side effects runs (`finish`) only once the reply FIFO is open.
Whatever it does not serve it must hand back untouched, from the right byte.
(Whole servers with and without it: tests/fifo/test_listener.py runs every test twice.)
"""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import struct
import termios
import weakref
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_fifo import fastpath
from mi_fifo.framer import UNPARSED, Framer, Request
from mi_fifo.replyfifo import reply_prefix
from mi_server.mi.commands import REGISTRY
from mi_server.mi.context import MIContext
from mi_server.mi.core import MICore
from mi_server.mi.jsonvalues import parse
from tests.fifo.fifoserver import ReplyFifos
from tests.jsonrpc_requests import request_body

serve = fastpath._serve
# without the extension these skip, and test_fastpath_build.py fails and says why
pytestmark = pytest.mark.skipif(serve is None, reason="mi_fifo._fastpath was not built")
MAX_REQUEST = 8192


def req(name: str, method: str, id_: int = 1) -> bytes:
    """A request of the shape the compiled path takes: `:name:` and the four members."""
    return b':%s:{"jsonrpc":"2.0","method":"%s","id":%d}' % (name.encode(), method.encode(),
                                                               id_)


class Stop(BaseException):
    """Not an Exception: what the C loop must let through (as KeyboardInterrupt)."""


class Work:
    """What Recorder.stage returns for the method "side" (a command with side effects)."""

    def __init__(self, n: int) -> None:
        self.n = n


def fionread(fd: int) -> int:
    """Bytes waiting in a pipe, without reading them."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def writers_open(path: Path) -> int:
    """Descriptors of this process open on `path` (the test's reader is one)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path))


class Recorder:
    """stage / finish / write_slow for `serve`: what they were called with.  Ready replies
    are `b"R<n>"` (n: the stage call); "side" is staged and finished as `b"F<n>"`; "held"
    is held as `(b"H<n>", settle)`, each settle call recorded with the writers open."""

    def __init__(self, reply: bytes | None = None, replies: Path | None = None) -> None:
        self.calls: list[tuple] = []
        self.finished: list[int] = []
        self.slow: list[tuple[int, bytes, int, int]] = []
        self.reply = reply
        self.replies = replies
        self.open_at_stage: list[int] = []
        self.open_at_finish: list[int] = []
        self.settled: list[tuple[int, bool, int]] = []  # (stage call, commit, writers)

    def stage(self, method, params, id_text):
        self.calls.append((method, params, id_text))
        if self.replies is not None:
            self.open_at_stage.append(writers_open(self.replies / "a"))
        if method == "side":
            return Work(len(self.calls))
        if method == "held":
            n = len(self.calls)
            return b"H%d" % n, lambda commit: self.settle(n, commit)
        return self.reply if self.reply is not None else b"R%d" % len(self.calls)

    def finish(self, work):
        self.finished.append(work.n)
        if self.replies is not None:
            self.open_at_finish.append(writers_open(self.replies / "a"))
        return b"F%d" % work.n

    def settle(self, n, commit):
        open_now = writers_open(self.replies / "a") if self.replies is not None else -1
        self.settled.append((n, commit, open_now))

    def write_slow(self, fd, reply, done, err):
        self.slow.append((fd, reply, done, err))
        os.close(fd)


def serve_bytes(data: bytes, replies: Path, rec: Recorder, refuse=None) -> bytes:
    """Run serve over `data` in a pipe; what it handed back."""
    r, w = os.pipe()
    try:
        assert os.write(w, data) == len(data)
        os.close(w)
        return serve(r, 65536, reply_prefix(replies), MAX_REQUEST, refuse, rec.stage,
                     rec.finish, rec.write_slow)
    finally:
        os.close(r)


@pytest.fixture
def fifos(short_tmp):
    f = ReplyFifos(short_tmp)
    yield f
    f.close()


class DispatchRecorder(MICore):
    """The Python path up to the command: what `_one` hands to `_dispatch`."""

    def __init__(self) -> None:
        super().__init__(REGISTRY, MIContext(engine=None, started=0.0))
        self.dispatched: list[tuple] = []

    def _dispatch(self, method, params, id_text, defer):
        self.dispatched.append((method, params, id_text))
        return None


def python_path(data: bytes) -> list[tuple[str, tuple]]:
    """(reply name, dispatch args) for each request the Python path dispatches in `data`."""
    core = DispatchRecorder()
    framer = Framer(MAX_REQUEST, 1.0, core.scan_value)
    out = []
    for ev in framer.feed(data, 0.0):
        if type(ev) is Request:
            before = len(core.dispatched)
            core.stage(parse(ev.body) if ev.value is UNPARSED else ev.value)
            if len(core.dispatched) > before:
                out.append((ev.reply_name, core.dispatched[-1]))
    return out


def exact(args) -> str:
    """repr tells list from tuple and str from int, which == would not."""
    return repr(args)


def test_the_common_request_is_served_with_the_python_paths_arguments(fifos):
    fifos.make("a")
    rec = Recorder()
    data = b':a:{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":7}\n'
    assert serve_bytes(data, fifos.dir, rec) == b""
    assert fifos.got("a") == b"R1"
    assert exact(rec.calls) == exact([("mq_get_size", ["q1"], "7")])
    assert exact([c for _, c in python_path(data)]) == exact(rec.calls)


@pytest.mark.parametrize("body, args", [
    (b'{"id":"x y","params":{"name":"q","limit":"2"},"method":"mq_fetch","jsonrpc":"2.0"}',
     ("mq_fetch", (("name", "q"), ("limit", "2")), '"x y"')),
    (b'{ "jsonrpc" : "2.0" ,\n\t"method":"which", "params" : [ ] , "id" : -123456789 }',
     ("which", [], "-123456789")),
    (b'{"jsonrpc":"2.0","method":"ps","params":{},"id":0}', ("ps", (), "0")),
    (b'{"jsonrpc":"2.0","method":"nosuch","id":"a.b/c:d"}', ("nosuch", None, '"a.b/c:d"')),
])
def test_shapes_it_takes(fifos, body, args):
    fifos.make("n")
    rec = Recorder()
    data = b" \n:n:\t" + body + b"\r\n"
    assert serve_bytes(data, fifos.dir, rec) == b""
    assert exact(rec.calls) == exact([args])
    assert exact([c for _, c in python_path(data)]) == exact(rec.calls)
    assert fifos.got("n") == b"R1"


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","method":"m","params":["q"]}',                # no id: notification
    b'{"jsonrpc":"2.0","method":"m","id":-0}',                        # -0 echoes as 0
    b'{"jsonrpc":"2.0","method":"m","id":01}',                        # invalid JSON
    b'{"jsonrpc":"2.0","method":"m","id":1.0}',
    b'{"jsonrpc":"2.0","method":"m","id":1e3}',
    b'{"jsonrpc":"2.0","method":"m","id":1234567890}',                # may leave int32
    b'{"jsonrpc":"2.0","method":"m","id":null}',
    b'{"jsonrpc":"2.0","method":"m","id":"\\u0041"}',                 # an escape
    b'{"jsonrpc":"2.0","method":"m","id":"\xc3\xa9"}',                # not ASCII
    b'{"jsonrpc":"2.0","method":"m","params":[1],"id":1}',            # not a string
    b'{"jsonrpc":"2.0","method":"m","params":[["q"]],"id":1}',
    b'{"jsonrpc":"2.0","method":"m","params":"q","id":1}',
    b'{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":1}',
    b'{"jsonrpc":"2.0","Method":"m","id":1}',                         # case variant
    b'{"jsonrpc":"2.0","method":"m","method":"n","id":1}',            # duplicate
    b'{"jsonrpc":"2.0","method":"m","id":1,"extra":1}',
    b'{"jsonrpc":"1.0","method":"m","id":1}',
    b'{"jsonrpc":2.0,"method":"m","id":1}',
    b'{"method":"m","id":1}',
    b'{"jsonrpc":"2.0","method":"m","id":1',                          # unfinished
    b'{"jsonrpc":"2.0","method":"m","id":1,}',
    b'[{"jsonrpc":"2.0","method":"m","id":1}]',                       # a batch
    b'{}',
])
def test_shapes_it_hands_back_untouched(fifos, body):
    fifos.make("n")
    rec = Recorder()
    data = b":n:" + body
    assert serve_bytes(data, fifos.dir, rec) == data
    assert rec.calls == []
    assert fifos.got("n") == b""


@pytest.mark.parametrize("head", [b"::", b":a.b:", b":a/b:", b":a\\b:", b":\xc3\xa9:",
                                  b":" + b"n" * 256 + b":", b"x:n:", b":n"])
def test_names_it_leaves_to_python(fifos, head):
    rec = Recorder()
    data = head + b'{"jsonrpc":"2.0","method":"m","id":1}'
    assert serve_bytes(data, fifos.dir, rec) == data
    assert rec.calls == []


def test_a_request_over_max_request_is_left_to_python(fifos):
    fifos.make("n")
    rec = Recorder()
    pad = b" " * (MAX_REQUEST - 40)
    ok = b':n:{"jsonrpc":"2.0","method":"m",' + pad + b'"id":1}'
    assert len(ok) - 1 <= MAX_REQUEST  # measured from the first colon, as the framer does
    assert serve_bytes(ok, fifos.dir, rec) == b""
    big = b':n:{"jsonrpc":"2.0","method":"m",' + pad + b'  "id":1}'
    assert len(big) - 1 > MAX_REQUEST
    assert serve_bytes(big, fifos.dir, rec) == big
    assert len(rec.calls) == 1


def test_what_follows_the_served_requests_is_handed_back_from_its_first_byte(fifos):
    fifos.make("a")
    fifos.make("b")
    rec = Recorder()
    first = req("a", "m")
    second = req("b", "m", 2)
    rest = b'\n:c:{"jsonrpc":"2.0","method":"m","id":3} :b:{"jsonrp'
    assert serve_bytes(first + second + rest, fifos.dir, rec) == rest.lstrip(b"\n")
    # the third was staged (a read-only reply is made before the open), then handed back
    # when its reply FIFO did not open: the Python path makes it again
    assert [c[2] for c in rec.calls] == ["1", "2", "3"]
    assert fifos.got("a") == b"R1" and fifos.got("b") == b"R2"


def test_reply_paths_it_cannot_use_at_once_are_left_to_python(fifos, short_tmp):
    """Nothing is run for them: Python then waits, refuses and logs as it always did."""
    (short_tmp / "file").write_bytes(b"keep")
    os.mkfifo(short_tmp / "noreader")
    fifos.make("target")  # a FIFO with a reader: only O_NOFOLLOW refuses the link to it
    os.symlink(short_tmp / "target", short_tmp / "link")
    fifos.make("linked")
    os.link(short_tmp / "linked", short_tmp / "linked2")
    fifos.make("own")
    st = os.stat(short_tmp / "own")
    for name, refuse in [("missing", None), ("file", None), ("noreader", None),
                         ("link", None), ("linked", None), ("own", (st.st_dev, st.st_ino))]:
        for method in ("side", "m", "held"):
            rec = Recorder()
            data = b':%s:{"jsonrpc":"2.0","method":"%s","id":1}' % (name.encode(),
                                                                   method.encode())
            assert serve_bytes(data, fifos.dir, rec, refuse) == data, name
            assert rec.finished == [], name  # side effects never ran
            # a held change is undone, once
            assert rec.settled == ([(1, False, -1)] if method == "held" else []), name
            assert rec.slow == []
    assert (short_tmp / "file").read_bytes() == b"keep"
    assert fifos.got("linked") == b"" and fifos.got("own") == b""
    assert fifos.got("target") == b""


def test_side_effects_run_once_the_reply_fifo_is_open_ready_replies_before(fifos):
    fifos.make("a")
    rec = Recorder(replies=fifos.dir)
    data = (req("a", "m")
            + req("a", "side", 2))
    assert serve_bytes(data, fifos.dir, rec) == b""
    assert fifos.got("a") == b"R1F2"
    assert rec.finished == [2]
    # only the test's reader while staging; the server's writer too while finishing
    assert rec.open_at_stage == [1, 1] and rec.open_at_finish == [2]


def test_a_held_change_is_committed_once_the_reply_fifo_is_open_then_answered(fifos):
    fifos.make("a")
    rec = Recorder(replies=fifos.dir)
    data = (req("a", "held")
            + req("a", "m", 2))
    unread: list[int] = []
    settle = rec.settle

    def settle_and_look(n, commit):
        settle(n, commit)
        unread.append(fionread(fifos.fds["a"]))

    rec.settle = settle_and_look  # type: ignore[method-assign]
    assert serve_bytes(data, fifos.dir, rec) == b""
    assert fifos.got("a") == b"H1R2"
    # committed while the server's writer was open (the test's reader + it), once, and
    # before the reply was written
    assert rec.settled == [(1, True, 2)] and unread == [0]
    assert rec.finished == [] and rec.open_at_stage == [1, 1]
    assert writers_open(fifos.dir / "a") == 1  # closed after the reply


@pytest.mark.parametrize("commit_fails_times", [1, 2])
def test_a_failed_commit_is_undone_and_not_answered(fifos, commit_fails_times):
    """settle raising: settle(False) is called once more (so the engine is never left
    locked, whatever the first call got to), the reply is not written, and the first
    exception comes back with the rest of the read."""
    fifos.make("a")
    fifos.make("b")
    calls: list[bool] = []

    def settle(commit):
        calls.append(commit)
        if len(calls) <= commit_fails_times:
            raise RuntimeError(f"boom {len(calls)}")

    rec = Recorder()
    rec.stage = lambda m, p, i: (b"H", settle) if m == "held" else b"R"  # type: ignore
    rest = req("b", "m", 2)
    left, exc = serve_bytes(req("a", "held") + rest,
                            fifos.dir, rec)
    assert left == rest
    assert str(exc) == "boom 1"
    assert calls == [True, False]
    assert fifos.got("a") == b""
    assert writers_open(fifos.dir / "a") == 1


def test_a_failed_undo_is_retried_and_reported(fifos):
    calls: list[bool] = []

    def settle(commit):
        calls.append(commit)
        if len(calls) == 1:
            raise RuntimeError("boom")

    rec = Recorder()
    rec.stage = lambda m, p, i: (b"H", settle)  # type: ignore[method-assign]
    data = req("missing", "held")
    left, exc = serve_bytes(data, fifos.dir, rec)
    assert left == b"" and str(exc) == "boom"
    assert calls == [False, False]


@pytest.mark.parametrize("bad", ["short", "not callable", "long", "str reply", "int reply",
                                 "no reply"])
def test_a_malformed_held_answer_is_refused_and_undone(fifos, bad):
    """Nothing is committed or written; a callable settle of a pair is undone first."""
    fifos.make("a")
    calls: list[bool] = []

    def settle(commit):
        calls.append(commit)

    answer = {"short": (b"H",), "not callable": (b"H", "x"), "long": (b"H", settle, 3),
              "str reply": ("H", settle), "int reply": (3, settle),
              "no reply": (None, settle)}[bad]
    rec = Recorder()
    rec.stage = lambda m, p, i: answer  # type: ignore[method-assign]
    left, exc = serve_bytes(req("a", "held"), fifos.dir, rec)
    assert left == b"" and type(exc) is TypeError
    assert calls == ([False] if bad.endswith("reply") else [])
    assert fifos.got("a") == b""
    assert writers_open(fifos.dir / "a") == 1


def test_an_interrupt_while_undoing_a_malformed_answer_propagates(fifos):
    fifos.make("a")

    def settle(commit):
        raise Stop

    rec = Recorder()
    rec.stage = lambda m, p, i: ("not bytes", settle)  # type: ignore[method-assign]
    with pytest.raises(Stop):
        serve_bytes(req("a", "held"), fifos.dir, rec)


def test_a_finish_that_makes_no_bytes_is_refused_and_its_fifo_closed(fifos):
    fifos.make("a")
    rec = Recorder()
    rec.finish = lambda work: None  # type: ignore[method-assign]
    left, exc = serve_bytes(req("a", "side"), fifos.dir, rec)
    assert left == b"" and type(exc) is TypeError
    assert fifos.got("a") == b""
    assert writers_open(fifos.dir / "a") == 1  # the test's reader: the writer is closed


def test_a_reply_bigger_than_the_pipe_is_finished_by_write_slow(fifos):
    fifos.make("a")
    rec = Recorder(reply=b"x" * 100_000)
    assert serve_bytes(req("a", "m"), fifos.dir, rec) == b""
    ((_fd, reply, done, err),) = rec.slow
    assert reply == b"x" * 100_000 and err == 0
    assert 0 < done < len(reply)
    assert fifos.got("a") == b"x" * done


@pytest.mark.parametrize("method", ["m", "side"])
def test_an_exception_in_stage_or_finish_comes_back_with_the_rest_of_the_read(fifos, method):
    """Nothing after the failed request is lost: the listener logs the exception and frames
    the bytes that come back with it."""
    fifos.make("a")
    fifos.make("b")

    def boom(*args):
        raise RuntimeError("boom")

    rec = Recorder()
    if method == "m":
        rec.stage = boom  # type: ignore[method-assign]
    else:
        rec.finish = boom  # type: ignore[method-assign]
    rest = b':b:{"jsonrpc":"2.0","method":"m","id":2} :c:{"jsonr'
    data = b':a:{"jsonrpc":"2.0","method":"%s","id":1}' % method.encode() + rest
    left, exc = serve_bytes(data, fifos.dir, rec)
    assert left == rest
    assert type(exc) is RuntimeError and exc.__traceback__ is not None
    assert fifos.got("a") == b"" and fifos.got("b") == b""
    assert writers_open(fifos.dir / "a") == 1  # a's reply FIFO, if opened, is closed


def test_a_base_exception_that_is_not_an_exception_propagates(fifos):
    fifos.make("a")

    def stop(*args):
        raise Stop

    rec = Recorder()
    rec.stage = stop  # type: ignore[method-assign]
    with pytest.raises(Stop):
        serve_bytes(req("a", "m"), fifos.dir, rec)


def test_what_stage_returned_is_released_whether_served_or_handed_back(fifos):
    fifos.make("a")
    rec = Recorder()
    refs: list[weakref.ref] = []
    stage = rec.stage

    def tracked(method, params, id_text):
        work = stage(method, params, id_text)
        # of a held answer, its settle (a tuple and bytes cannot be weakly referenced)
        refs.append(weakref.ref(work[1] if type(work) is tuple else work))
        return work

    rec.stage = tracked  # type: ignore[method-assign]
    for name in (b"missing", b"a"):  # handed back (no such reply FIFO), then served
        serve_bytes(b':%s:{"jsonrpc":"2.0","method":"side","id":1}' % name, fifos.dir, rec)
        serve_bytes(b':%s:{"jsonrpc":"2.0","method":"held","id":1}' % name, fifos.dir, rec)
    gc.collect()
    assert len(refs) == 4 and all(ref() is None for ref in refs)
    assert rec.finished == [3]
    assert [s[:2] for s in rec.settled] == [(2, False), (4, True)]


def test_a_signal_interrupts_the_read_after_its_handler_ran():
    r, w = os.pipe()  # w stays open: serve sleeps in read() until the timer fires
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(a[0]))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert serve(r, 65536, b"/nonexistent/", MAX_REQUEST, None, print, print,
                     print) == b""
        assert seen == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)


# -- property: whatever it serves, the Python path dispatches identically ---------------
# (the bodies: tests/jsonrpc_requests.py)

@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=st.lists(request_body(), min_size=1, max_size=3),
       tail=st.sampled_from([b"", b"\n", b" \r\n", b":x", b"garbage"]))
def test_whatever_it_serves_the_python_path_dispatches_identically(fifos, bodies, tail):
    names = []
    for k in range(len(bodies)):
        name = f"h{k}"
        names.append(name)
        if name not in fifos.fds:
            fifos.make(name)
    data = b"".join(b":%s:%s" % (n.encode(), b) for n, b in zip(names, bodies, strict=True)) + tail
    rec = Recorder()
    left = serve_bytes(data, fifos.dir, rec)
    served = len(data) - len(left)
    assert data.endswith(left)
    # the served prefix, framed and checked the Python way, dispatches the same calls
    expected = python_path(data[:served]) if served else []
    assert exact([c for _, c in expected]) == exact(rec.calls)
    assert [n for n, _ in expected] == names[:len(rec.calls)]
    for k, name in enumerate(names[:len(rec.calls)]):
        assert fifos.got(name) == b"R%d" % (k + 1)
    # what it handed back starts where a request starts (or is the tail)
    assert left == b"" or left[:1] == b":" or left == tail.lstrip()


def test_a_non_blocking_descriptor_with_nothing_left_returns(fifos):
    fifos.make("a")
    r, w = os.pipe()  # w stays open: without O_NONBLOCK this would sleep in read()
    os.set_blocking(r, False)
    rec = Recorder()
    try:
        os.write(w, req("a", "m"))
        assert serve(r, 65536, reply_prefix(fifos.dir), MAX_REQUEST, None, rec.stage,
                     rec.finish, rec.write_slow) == b""
        assert len(rec.calls) == 1 and fifos.got("a") == b"R1"
    finally:
        os.close(r)
        os.close(w)


def test_bad_arguments_are_refused_before_any_read(fifos):
    rec = Recorder()
    for prefix, refuse, error in [(b"/tmp/\x00x/", None, ValueError),
                                  (reply_prefix(fifos.dir), [1, 2], TypeError)]:
        r, w = os.pipe()
        try:
            os.write(w, req("a", "m"))
            with pytest.raises(error):
                serve(r, 65536, prefix, MAX_REQUEST, refuse, rec.stage, rec.finish,
                      rec.write_slow)
            assert os.read(r, 100).startswith(b":a:")  # nothing was read
        finally:
            os.close(r)
            os.close(w)


def test_a_set_stop_flag_ends_the_read_after_the_request_in_hand(fifos):
    """The listener's stop-signal handler sets the flag's byte (here: the first command):
    the request being served is finished, the rest of the read is handed back unserved."""
    for name in ("a", "b", "c"):
        fifos.make(name)
    flag = bytearray(1)
    rec = Recorder()
    stage = rec.stage

    def stage_then_stop(method, params, id_text):
        flag[0] = 1
        return stage(method, params, id_text)

    rest = req("b", "which", 2) + req("c", "which", 3)
    r, w = os.pipe()
    try:
        os.write(w, req("a", "which") + rest)
        os.close(w)
        left = serve(r, 65536, reply_prefix(fifos.dir), MAX_REQUEST, None, stage_then_stop,
                     rec.finish, rec.write_slow, flag)
    finally:
        os.close(r)
    assert left == rest
    assert len(rec.calls) == 1 and fifos.got("a").startswith(b"R1")
    assert fifos.got("b") == fifos.got("c") == b""
