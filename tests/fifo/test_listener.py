"""The FIFO listener in a real process, on real FIFOs, over the real MI core and engine."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opensips.mi import OpenSIPSMI

from mi_fifo.replies import PARSE_ERROR_REPLY, TOO_LARGE_REPLY
from mi_server.engine import Arena
from mi_server.engine.shm.layout import H_ROLLBACKS
from tests.fifo.fifoserver import ReplyFifos, call, read_all, rpc, send, shell_client, start
from tests.serverproc import wait_for

ADD = rpc("mq_add", ["q", "k", "v"])


# every listener test runs twice: with the compiled fast path (what a built install
# serves with) and with it turned off (the pure-Python path that defines the behaviour)
@pytest.fixture(params=["compiled", "python"])
def server(short_tmp, request):
    srv = start(short_tmp, max_request=8192, compiled=request.param == "compiled")
    yield srv
    try:
        assert srv.stop() == 0
    finally:
        srv.arena.unlink()  # also when the listener had to be killed


def late_reader_reply(server, request: bytes, before_open=lambda: None) -> bytes:
    """The reply to `request` for a client that opens its reply FIFO only once the
    listener is waiting for a reader; `before_open` runs just before that open."""
    path = server.reply_dir / "late"
    os.mkfifo(path, 0o600)
    staged = server.fast_calls.value
    send(server, b":late:" + request)
    if server.compiled:  # the compiled path took it, found no reader and handed it over
        wait_for(lambda: server.fast_calls.value > staged, 10)
    time.sleep(0.05)  # the listener is now waiting for a reader (bounded, ~0.3 s)
    before_open()
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return read_all(rfd, 10)
    finally:
        os.close(rfd)


def size_via_fifo(server) -> bytes:
    return call(server, "sz", rpc("mq_get_size", ["q"]))


def test_raw_client_gets_one_line_reply(server):
    assert call(server, "r1", rpc("which", {})).startswith(b'{"jsonrpc":"2.0","result":["')
    assert call(server, "r2", ADD) == b'{"jsonrpc":"2.0","result":"OK","id":1}'
    assert server.size() == 1


def test_the_compiled_run_serves_through_the_fast_path(server):
    # the common request: the compiled listener stages it in C, the other never does
    assert call(server, "c1", rpc("mq_get_size", ["q"])) == (
        b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":0}},"id":1}')
    assert server.fast_calls.value == int(server.compiled)


def test_a_reply_bigger_than_the_pipe_arrives_whole(server):
    for i in range(40):
        server.arena.add("big", f"k{i}", "v" * 4000)
    # a shape the compiled path takes: its first write fills the pipe, the rest is waited
    # for (write_slow) while the client reads
    reply = call(server, "big1", rpc("mq_fetch", ["big", "100"]))
    assert len(reply) > 65536 and reply.endswith(b"],\"id\":1}") and b"\n" not in reply
    items = json.loads(reply)["result"]
    assert [it["key"] for it in items] == [f"k{i}" for i in range(40)]
    assert server.size("big") == 0


def test_bytes_of_a_skipped_oversize_request_are_never_run(server):
    """While the framer skips the rest of an oversize request, what looks like a request
    inside it (here inside its JSON string, quotes escaped) must not be served."""
    fifos = ReplyFifos(server.reply_dir)
    fifos.make("a")
    fifos.make("b")
    fds = fifos.fds
    try:
        assert call(server, "c", ADD) == b'{"jsonrpc":"2.0","result":"OK","id":1}'
        w = os.open(server.fifo, os.O_WRONLY)
        try:
            os.write(w, b':a:{"jsonrpc":"2.0","method":"mq_get_size","params":["' + b"x" * 9000)
            assert read_all(fds["a"], 5) == TOO_LARGE_REPLY
            os.write(w, b':b:{\\"jsonrpc\\":\\"2.0\\",\\"method\\":\\"mq_fetch\\",'
                        b'\\"params\\":[\\"q\\"],\\"id\\":2}"],"id":1}')
        finally:
            os.close(w)
        assert size_via_fifo(server) == (
            b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":1}},"id":1}')
        assert read_all(fds["b"], 0.2) is None
    finally:
        fifos.close()


def test_a_request_after_an_abandoned_oversize_one_is_served_whole(server):
    """Writer A sends the start of a request over max_request and never finishes it;
    0.2 s later writer B sends a whole request.  The framer, skipping A's rest, takes B's
    bytes for it until they stop being valid JSON, then must resume at B's own start (it
    framed B from its middle: reply name '"mq_get_size","params"', B never answered)."""
    fifos = ReplyFifos(server.reply_dir)
    fifos.make("a")
    try:
        w = os.open(server.fifo, os.O_WRONLY)
        try:
            os.write(w, b':a:{"jsonrpc":"2.0","method":"mq_add","params":["q","k","'
                        + b"x" * 9000)
            assert read_all(fifos.fds["a"], 5) == TOO_LARGE_REPLY
            time.sleep(0.2)
            assert call(server, "b", rpc("mq_get_size", ["q"]), timeout=5) == (
                b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":0}},"id":1}')
        finally:
            os.close(w)
    finally:
        fifos.close()


def test_plain_shell_client_byte_for_byte(server):
    server.arena.add("q", 'key "q"', "tab\there")
    out = shell_client(server.fifo, server.reply_dir, "shell_1",
                       '{"jsonrpc":"2.0","method":"mq_fetch","params":{"name":"q"},"id":"x"}')
    assert out == (b'{"jsonrpc":"2.0","result":{"Item":{"key":"key \\"q\\"",'
                          b'"value":"tab\\there"}},"id":"x"}')


def test_opensips_package_execute(server):
    mi = OpenSIPSMI("fifo", fifo_file=str(server.fifo), fifo_file_fallback=str(server.fifo),
                    fifo_reply_dir=str(server.reply_dir))
    assert mi.execute("mq_add", {"name": "q", "key": "a", "value": "b"}) == "OK"
    assert mi.execute("mq_get_size", ["q"]) == {"Queue": {"name": "q", "size": 1}}


def _hostile(reply_dir: Path, kind: str) -> tuple[str, Path | None]:
    """A reply name and the FIFO a careless server would write to (None: nothing there)."""
    if kind == "dotdot":
        target = reply_dir.parent / "x"
        os.mkfifo(target)
        return "../x", target
    if kind == "slash":
        (reply_dir / "a").mkdir()
        os.mkfifo(reply_dir / "a" / "b")
        return "a/b", reply_dir / "a" / "b"
    if kind == "dot":
        os.mkfifo(reply_dir / "a.b")
        return "a.b", reply_dir / "a.b"
    if kind == "symlink":
        os.mkfifo(reply_dir / "real")
        os.symlink(reply_dir / "real", reply_dir / "link")
        return "link", reply_dir / "real"
    if kind == "regular":
        (reply_dir / "plain").write_bytes(b"")
        return "plain", None
    if kind == "hardlink":
        os.mkfifo(reply_dir / "one")
        os.link(reply_dir / "one", reply_dir / "two")
        return "two", reply_dir / "one"
    if kind == "toolong":
        name = "n" * (129 - len(str(reply_dir)))
        os.mkfifo(reply_dir / name)
        return name, reply_dir / name
    if kind == "missing":
        return "nosuch", None
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["dotdot", "slash", "dot", "symlink", "regular", "hardlink",
                                  "toolong", "missing"])
@pytest.mark.parametrize("command", ["add", "fetch"])
def test_hostile_reply_target_gets_no_reply_and_is_not_run(server, kind, command):
    name, target = _hostile(server.reply_dir, kind)
    rfd = os.open(target, os.O_RDONLY | os.O_NONBLOCK) if target else None
    if command == "fetch":  # the compiled path takes it and puts it back
        server.arena.add("q", "k", "v")
    try:
        request = ADD if command == "add" else rpc("mq_fetch", ["q"])
        send(server, b":%s:%s" % (name.encode(), request))
        # served in order: once this answers, the hostile request has been dealt with
        assert size_via_fifo(server).startswith(b'{"jsonrpc":"2.0","result":{"Queue"')
        assert server.size() == (0 if command == "add" else 1)
        if rfd is not None:
            assert os.read(rfd, 100) == b""  # no reply bytes reached the target
    finally:
        if rfd is not None:
            os.close(rfd)
    if kind == "regular":
        assert (server.reply_dir / "plain").read_bytes() == b""


def test_reply_fifo_without_reader_means_the_command_is_not_run(server):
    os.mkfifo(server.reply_dir / "deaf")
    send(server, b":deaf:" + ADD)
    assert size_via_fifo(server).startswith(b'{"jsonrpc"')
    assert server.size() == 0


def test_a_fetch_whose_reader_comes_late_gives_its_item_once(server):
    """The compiled path takes the item, cannot open the reply FIFO, puts the item back;
    the Python path waits for the reader and fetches it: one item, to one client."""
    server.arena.add("q", "k1", "v1")
    server.arena.add("q", "k2", "v2")
    rollbacks = server.arena._w[H_ROLLBACKS]
    assert late_reader_reply(server, rpc("mq_fetch", ["q"])) == \
        b'{"jsonrpc":"2.0","result":{"Item":{"key":"k1","value":"v1"}},"id":1}'
    assert server.size() == 1
    assert server.arena.stats()["q"].fetched == 1
    # the compiled path's removal was undone (the engine counts its rollbacks)
    assert server.arena._w[H_ROLLBACKS] == rollbacks + int(server.compiled)
    assert call(server, "next", rpc("mq_fetch", ["q"])) == \
        b'{"jsonrpc":"2.0","result":{"Item":{"key":"k2","value":"v2"}},"id":1}'


def test_fetches_served_while_another_process_adds_lose_and_repeat_nothing(server):
    """The compiled path commits a fetch only after its open, with the engine locked in
    between: a producer in another process meanwhile neither loses an item nor sees one
    twice."""
    n = 300
    done = threading.Event()

    producer_arena = Arena.attach(server.arena.name)  # its own lock, apart from the test's

    def produce() -> None:
        for i in range(n):
            producer_arena.add("q", f"k{i}", str(i))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    got: list[str] = []
    while not (done.is_set() and server.size() == 0):
        reply = json.loads(call(server, "f", rpc("mq_fetch", ["q"])))
        if "result" in reply:
            got.append(reply["result"]["Item"]["value"])
    producer.join()
    producer_arena.close()
    assert got == [str(i) for i in range(n)]
    assert server.arena.stats()["q"].fetched == n
    if server.compiled:
        assert server.fast_calls.value >= n
    else:
        assert server.fast_calls.value == 0


def test_the_servers_own_fifo_is_not_a_reply_fifo(short_tmp):
    # Reply directory = the FIFO's directory (as with the defaults /tmp and
    # /tmp/opensips_fifo): a request naming the server's own FIFO as its reply FIFO would
    # run and then be answered into the request stream, where the listener blocks on a
    # reply bigger than the pipe (it is the only reader).  Refused: not run, no reply.
    srv = start(short_tmp, replies=short_tmp, max_request=8192)
    try:
        send(srv, b":mi_fifo:" + ADD)
        assert call(srv, "sz", rpc("mq_get_size", ["q"])).startswith(b'{"jsonrpc"')
        assert srv.size() == 0
    finally:
        try:
            assert srv.stop() == 0
        finally:
            srv.arena.unlink()


def test_empty_name_runs_without_reply(server):
    send(server, b"::" + ADD)
    size_via_fifo(server)
    assert server.size() == 1


def test_two_requests_in_one_write(server):
    a, b = server.reply_dir / "ta", server.reply_dir / "tb"
    os.mkfifo(a)
    os.mkfifo(b)
    ra = os.open(a, os.O_RDONLY | os.O_NONBLOCK)
    rb = os.open(b, os.O_RDONLY | os.O_NONBLOCK)
    send(server, b":ta:" + rpc("which", {}, 1) + b":tb:" + rpc("mq_get_size", ["q"], 2))
    assert read_all(ra, 10).startswith(b'{"jsonrpc":"2.0","result":["get_statistics"')
    assert read_all(rb, 10) == (
        b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":0}},"id":2}')
    os.close(ra)
    os.close(rb)


def test_split_write_is_one_request(server):
    path = server.reply_dir / "split"
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    data = b":split:" + ADD
    send(server, data[:20])
    send(server, data[20:])
    assert read_all(rfd, 10) == b'{"jsonrpc":"2.0","result":"OK","id":1}'
    os.close(rfd)


def test_parse_error_is_answered(server):
    assert call(server, "bad", b'{"jsonrpc":"2.0",}') == PARSE_ERROR_REPLY


def test_unfinished_json_is_answered_after_idle_timeout(server):
    assert call(server, "unf", b'{"jsonrpc":"2.0",') == PARSE_ERROR_REPLY


def test_oversize_request_is_refused(server):
    big = rpc("mq_add", ["q", "k", "v" * 10000])
    assert call(server, "huge", big) == TOO_LARGE_REPLY
    assert server.size() == 0


def test_garbage_then_valid_request_is_answered(server):
    garbage = b'{"jsonrpc":"2.0","method":"mq_get_size",\n\x00\xff junk ::: [[[ "'
    reply = call(server, "afterjunk", b"", raw=garbage + b":afterjunk:" + ADD)
    assert reply == b'{"jsonrpc":"2.0","result":"OK","id":1}'


def test_eight_concurrent_clients_each_get_their_own_reply(server):
    def one(i: int) -> bytes:
        return call(server, f"c{i}", rpc("mq_get_size", ["q"], i))

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(one, range(8)))
    for i, r in enumerate(replies):
        assert r == b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":0}},"id":%d}' % i


def _has_reader(path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nobody has it open for reading
        return False
    return True


def test_a_deleted_fifo_is_recreated(server):
    os.unlink(server.fifo)
    wait_for(server.fifo.is_fifo, 5, "the FIFO to be re-created")
    assert call(server, "again", ADD) == b'{"jsonrpc":"2.0","result":"OK","id":1}'


def test_a_file_put_in_place_of_the_fifo_is_left_alone(server):
    """Someone replaced the FIFO with a regular file: it is not deleted (as at start);
    once it is gone, the FIFO is re-created."""
    os.unlink(server.fifo)
    server.fifo.write_text("not a fifo")
    time.sleep(2.5)  # two checks of the path
    assert server.fifo.read_text() == "not a fifo"
    os.unlink(server.fifo)
    wait_for(server.fifo.is_fifo, 5, "the FIFO to be re-created")
    assert call(server, "again", ADD) == b'{"jsonrpc":"2.0","result":"OK","id":1}'


def test_a_fifo_another_server_serves_is_left_to_it(server):
    """Our FIFO deleted and another server's claimed in its place: ours does not take it
    over (each would re-create the FIFO the other removed)."""
    from mi_fifo.fifofile import claim_fifo

    os.unlink(server.fifo)
    other = claim_fifo(server.cfg)
    try:
        ino = os.lstat(server.fifo).st_ino
        time.sleep(2.5)
        assert os.lstat(server.fifo).st_ino == ino
    finally:
        os.close(other)
    # that server gone (its lock with it): the FIFO it left is replaced by one we serve
    wait_for(lambda: _has_reader(server.fifo), 5, "a FIFO the listener reads")
    assert call(server, "again", ADD) == b'{"jsonrpc":"2.0","result":"OK","id":1}'


def test_wake_up_signals_lose_no_request(server):
    """The listener sleeps in read() and is woken by signals that swap its read descriptor
    (see _Loop): a storm of them while requests flow must not lose or repeat any."""
    import signal

    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            os.kill(server.proc.pid, signal.SIGALRM)  # the listener's own timer signal
            stop.wait(0.0002)

    # only once the listener serves (its handler is installed; before, SIGALRM would kill)
    assert size_via_fifo(server) is not None
    t = threading.Thread(target=storm)
    t.start()
    try:
        replies = [call(server, f"s{i}", rpc("mq_add", ["q", f"k{i}", "v"], i), timeout=10)
                   for i in range(300)]
    finally:
        stop.set()
        t.join()
    for i, r in enumerate(replies):
        assert r == b'{"jsonrpc":"2.0","result":"OK","id":%d}' % i
    assert server.size("q") == 300


def test_reading_the_fifo_leaves_its_access_time_alone(server):
    """O_NOATIME: every client write sets the FIFO's mtime, so without it each read would
    update the atime too, a dirtied inode per request on a disk file system."""
    # Control: on this file system a FIFO read without O_NOATIME does move the atime
    # (under a noatime mount nothing would, and the check below would prove nothing).
    control = server.fifo.parent / "control_fifo"
    os.mkfifo(control, 0o600)
    fd = os.open(control, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"x")
        os.read(fd, 1)
        first = os.stat(control).st_atime_ns
        time.sleep(0.02)
        os.write(fd, b"x")
        os.read(fd, 1)
        if os.stat(control).st_atime_ns == first:
            pytest.skip("FIFO reads do not update the atime here (noatime mount)")
    finally:
        os.close(fd)
        os.unlink(control)
    assert size_via_fifo(server) is not None
    before = os.stat(server.fifo).st_atime_ns
    for _ in range(3):
        time.sleep(0.02)  # a coarse clock would hide an update
        assert size_via_fifo(server) is not None
    assert os.stat(server.fifo).st_atime_ns == before


def test_hung_clients_do_not_block_the_next_one(server):
    # one never opens its reply FIFO; one opens it and never reads a reply bigger than the
    # pipe (the listener gives up on it after WRITE_STALL); the next client is served
    for i in range(40):
        server.arena.add("big", f"k{i}", "v" * 4000)  # ~160 KB of reply, pipes hold 64 KB
    os.mkfifo(server.reply_dir / "hung1")
    os.mkfifo(server.reply_dir / "hung2")
    never_reads = os.open(server.reply_dir / "hung2", os.O_RDONLY | os.O_NONBLOCK)
    send(server, b":hung1:" + rpc("which", {}))
    send(server, b":hung2:" + rpc("mq_fetch", ["big", 100]))
    assert call(server, "next", ADD, timeout=10) == b'{"jsonrpc":"2.0","result":"OK","id":1}'
    assert server.size("big") == 0  # the big fetch did run: its reply was abandoned
    os.close(never_reads)


def test_a_read_only_reply_waited_for_is_made_again(server):
    # The reply to mq_get_size is made before the open; the client opens its end only
    # later, after an item was added: the reply must say 1 (as of the open), not 0.
    reply = late_reader_reply(server, rpc("mq_get_size", ["q"]),
                              before_open=lambda: server.arena.add("q", "k", "v"))
    assert reply == b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":1}},"id":1}'


def test_a_json_integer_beyond_int_digits_is_clamped_not_a_parse_error(server):
    # 5,000 digits: Python's int() refuses it, cJSON (a double) and JSON take it
    body = b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q"],"id":%s}' % (b"9" * 5000)
    assert json.loads(call(server, "bigint", body))["id"] == 2147483647


def test_sigterm_with_a_backlog_of_unanswerable_requests_stops_at_once(server):
    """100 requests queued in the FIFO, each for a reply FIFO nobody reads: each alone may
    wait ~0.3 s for its reader, so serving the backlog before stopping took ~30 s and the
    supervisor killed the listener.  The stop flag is checked between requests."""
    names = [f"nr{i}" for i in range(100)]
    for name in names:
        os.mkfifo(server.reply_dir / name)  # never opened for reading
    staged = server.fast_calls.value
    send(server, b"".join(b":%s:%s" % (n.encode(), rpc("mq_get_size", ["q"])) for n in names))
    if server.compiled:  # the compiled path took the first, found no reader, handed back
        wait_for(lambda: server.fast_calls.value > staged, 10)
    time.sleep(0.2)  # the listener is now working through the backlog
    t0 = time.monotonic()
    assert server.stop() == 0
    # a bound for "did not work through the backlog first", not a performance figure
    assert time.monotonic() - t0 < 1.5
