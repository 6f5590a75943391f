"""HTTP/1.1 connection handling of the worker loop, over raw sockets and http.client."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time

import pytest

from mi_server.config import HttpConfig
from mi_server.http.app import make_wsgi_app
from mi_server.http.server import Worker
from tests.http.rawhttp import closed_by_peer, post, read_reply


def size_request(request_id: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": "mq_get_size", "params": ["q1"],
                       "id": request_id}).encode()


def test_keep_alive_serves_two_requests_on_one_connection(serve):
    s = serve()
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.request("POST", "/mi", body=size_request("a"))
    first = conn.getresponse()
    assert json.loads(first.read())["id"] == "a"
    sock = conn.sock
    conn.request("POST", "/mi", body=size_request("b"))
    second = conn.getresponse()
    assert json.loads(second.read())["id"] == "b"
    assert conn.sock is sock and first.getheader("Connection") is None
    conn.close()


def test_connection_close_is_honoured(serve):
    s = serve()
    sock = s.connect()
    sock.sendall(post("/mi", size_request("a"), "Connection: close"))
    reply = read_reply(sock, bytearray())
    assert reply.status == 200 and reply.headers["connection"] == "close"
    assert closed_by_peer(sock)


def test_http_1_0_closes_unless_keep_alive_is_asked(serve):
    s = serve()
    sock = s.connect()
    sock.sendall(post("/mi", size_request("a"), version="1.0"))
    assert read_reply(sock, bytearray()).headers["connection"] == "close"
    assert closed_by_peer(sock)

    sock = s.connect()
    buf = bytearray()
    for rid in ("a", "b"):
        sock.sendall(post("/mi", size_request(rid), "Connection: keep-alive", version="1.0"))
        reply = read_reply(sock, buf)
        assert reply.headers["connection"] == "keep-alive"
        assert json.loads(reply.body)["id"] == rid


def test_pipelined_requests_are_answered_in_order(serve):
    s = serve()
    sock = s.connect()
    ids = [str(i) for i in range(5)]
    sock.sendall(b"".join(post("/mi", size_request(i)) for i in ids))
    buf = bytearray()
    assert [json.loads(read_reply(sock, buf).body)["id"] for _ in ids] == ids


def test_pipelined_requests_after_connection_close_are_not_answered(serve):
    s = serve()
    sock = s.connect()
    first = post("/mi", size_request("a"), "Connection: close")
    sock.sendall(first + post("/mi", size_request("b")))
    buf = bytearray()
    assert json.loads(read_reply(sock, buf).body)["id"] == "a"
    assert closed_by_peer(sock) and buf == b""


def test_every_reply_has_content_length(serve):
    s = serve()
    sock = s.connect()
    notification = b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"]}'
    sock.sendall(post("/mi", size_request("a")) + post("/mi", notification) + post("/mi", b"")
                 + b"GET /mi HTTP/1.1\r\n\r\n" + post("/x", b"{}"))
    buf = bytearray()
    statuses = []
    for _ in range(5):
        reply = read_reply(sock, buf)  # reads exactly Content-Length bytes
        assert reply.headers["content-length"] == str(len(reply.body))
        statuses.append(reply.status)
    assert statuses == [200, 202, 400, 405, 400]


def test_malformed_http_is_400_and_closed(serve):
    s = serve()
    sock = s.connect()
    sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    reply = read_reply(sock, bytearray())
    assert reply.status == 400 and reply.headers["connection"] == "close"
    assert closed_by_peer(sock)


def head_too_large(sock: socket.socket) -> None:
    reply = read_reply(sock, bytearray())
    assert (reply.status, reply.body) == (431, b"Request Header Fields Too Large")
    assert reply.headers["connection"] == "close"
    assert closed_by_peer(sock)


def test_an_unfinished_oversized_head_is_431(serve):
    s = serve()
    sock = s.connect()
    sock.sendall(b"POST /mi HTTP/1.1\r\nX-Long: " + b"a" * 70000)
    head_too_large(sock)


def many_headers(total: int) -> bytes:
    return b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 90) for n in range(total // 100))


@pytest.mark.parametrize(("url", "fields"), [
    pytest.param(b"/mi", many_headers(20000), id="many-fields"),
    pytest.param(b"/mi", b"X-Long: " + b"a" * 20000 + b"\r\n", id="one-field"),
    pytest.param(b"/mi/" + b"u" * 20000, b"", id="long-url"),
])
def test_a_whole_oversized_head_in_one_read_is_431(serve, url, fields):
    # complete, with its body, in one send: the parser sees it whole in one read
    s = serve()
    sock = s.connect()
    body = size_request("1")
    sock.sendall(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                 % (url, fields, len(body), body))
    head_too_large(sock)


def test_an_oversized_head_trickled_in_small_reads_is_431(serve):
    s = serve()
    sock = s.connect()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = b"POST /mi HTTP/1.1\r\n" + many_headers(20000)
    for i in range(0, len(head), 1000):
        try:
            sock.sendall(head[i:i + 1000])
        except (BrokenPipeError, ConnectionResetError):
            break  # refused already: the reply is waiting
        time.sleep(0.002)
    head_too_large(sock)


def test_a_head_under_the_limit_is_served_and_requests_after_a_431_are_not(serve):
    s = serve()
    sock = s.connect()
    body = size_request("ok")
    fine = (b"POST /mi HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (many_headers(15000), len(body), body))
    too_big = (b"POST /mi HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
               % (many_headers(20000), len(body), body))
    sock.sendall(fine + too_big + fine)
    buf = bytearray()
    first = read_reply(sock, buf)
    assert first.status == 200 and json.loads(first.body)["id"] == "ok"
    second = read_reply(sock, buf)
    assert second.status == 431 and not buf
    assert closed_by_peer(sock)


def test_many_pipelined_requests_in_big_reads_are_not_taken_for_one_big_head(serve):
    # ~150 KB of small requests in one send: reads of 64 KiB end in the middle of a head
    s = serve()
    sock = s.connect()
    requests = [post("/mi", size_request(str(n)), "X-Pad: " + "p" * 400) for n in range(300)]
    sock.sendall(b"".join(requests))
    buf = bytearray()
    ids = [json.loads(read_reply(sock, buf).body)["id"] for _ in requests]
    assert ids == [str(n) for n in range(300)]


def chunked(body: bytes, piece: int = 10) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
             for i in range(0, len(body), piece)]
    return (b"POST /mi HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(parts) + b"0\r\n\r\n")


def test_chunked_body_is_served(serve):
    s = serve()
    sock = s.connect()
    sock.sendall(chunked(size_request("c")))
    reply = read_reply(sock, bytearray())
    assert reply.status == 200 and json.loads(reply.body)["id"] == "c"


def test_chunked_body_over_the_limit_is_413(serve):
    s = serve(max_request=100)
    sock = s.connect()
    sock.sendall(chunked(b"x" * 150)[:-5])  # not even finished: refused once over 100 bytes
    reply = read_reply(sock, bytearray())
    assert reply.status == 413 and reply.headers["connection"] == "close"
    assert closed_by_peer(sock)


def test_expect_100_continue_is_answered_before_the_body(serve):
    s = serve()
    sock = s.connect()
    body = size_request("e")
    request = post("/mi", body, "Expect: 100-continue")
    sock.sendall(request[: -len(body)])
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(100)
    assert bytes(buf) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    reply = read_reply(sock, bytearray())
    assert reply.status == 200 and json.loads(reply.body)["id"] == "e"


def test_expect_100_continue_over_the_limit_gets_413_not_continue(serve):
    s = serve(max_request=10)
    sock = s.connect()
    sock.sendall(post("/mi", b"x" * 50, "Expect: 100-continue")[:-50])
    assert read_reply(sock, bytearray()).status == 413


def test_idle_keep_alive_connection_is_closed_after_the_timeout(serve):
    s = serve(idle_timeout=0.3)
    sock = s.connect()
    sock.sendall(post("/mi", size_request("a")))
    assert read_reply(sock, bytearray()).status == 200
    assert closed_by_peer(sock)  # within the socket's 10 s timeout


def test_a_client_that_waits_before_sending_is_served_and_kept(serve):
    # accepted before its first bytes (the compiled path: a waiting descriptor, not a
    # Connection yet), then a keep-alive connection like any other
    s = serve(workers=1)
    sock = s.connect()
    time.sleep(0.2)
    for rid in ("late", "next"):
        sock.sendall(post("/mi", size_request(rid)))
        assert json.loads(read_reply(sock, bytearray()).body)["id"] == rid


def test_a_client_that_waits_then_asks_to_close_gets_its_reply_and_the_close(serve):
    s = serve(workers=1)
    sock = s.connect()
    time.sleep(0.2)
    sock.sendall(post("/mi", size_request("late"), "Connection: close"))
    reply = read_reply(sock, bytearray())
    assert json.loads(reply.body)["id"] == "late"
    assert reply.headers["connection"] == "close"
    assert closed_by_peer(sock)


def test_a_connection_that_never_sends_is_closed_after_the_idle_timeout(serve):
    s = serve(workers=1, idle_timeout=0.3)
    sock = s.connect()
    assert closed_by_peer(sock)  # within the socket's 10 s timeout


def test_a_connection_that_never_sends_holds_its_place_under_the_cap(serve):
    s = serve(workers=1, max_connections=1, idle_timeout=60)
    silent = s.connect()
    time.sleep(0.2)  # taken by the worker, nothing read
    extra = s.connect()
    extra.sendall(post("/mi", size_request("extra")))
    extra.settimeout(0.5)
    try:
        early = extra.recv(1)
    except TimeoutError:
        early = None
    assert early is None  # the silent connection is the worker's one
    silent.close()  # its end of file frees the place
    extra.settimeout(10)
    assert json.loads(read_reply(extra, bytearray()).body)["id"] == "extra"
    extra.close()


def test_a_stalled_client_does_not_block_the_worker(serve):
    s = serve(workers=1)
    stalled = s.connect()
    stalled.sendall(b"POST /mi HTTP/1.1\r\nContent-Le")  # and nothing more
    other = s.connect()
    other.sendall(post("/mi", size_request("o")))
    assert json.loads(read_reply(other, bytearray()).body)["id"] == "o"
    # the stalled one still completes when it goes on
    body = size_request("s")
    stalled.sendall(b"ngth: %d\r\n\r\n%s" % (len(body), body))
    assert json.loads(read_reply(stalled, bytearray()).body)["id"] == "s"


def test_a_request_trickled_a_byte_at_a_time_is_cut_off(serve):
    """Each byte resets no clock: the whole request must arrive within request_timeout."""
    s = serve(workers=1, request_timeout=0.5)
    slow = s.connect()
    slow.sendall(b"POST /mi HTTP/1.1\r\n")
    slow.settimeout(0.05)  # closed_by_peer waits this long for an EOF
    closed = False
    for _ in range(60):  # up to 6 s of trickling, far beyond the 0.5 s allowed
        time.sleep(0.1)
        try:
            slow.sendall(b"X")
        except OSError:  # reset by the server
            closed = True
            break
        if closed_by_peer(slow):
            closed = True
            break
    assert closed, "the trickling connection was never closed"
    # the worker still serves others
    other = s.connect()
    other.sendall(post("/mi", size_request("o")))
    assert json.loads(read_reply(other, bytearray()).body)["id"] == "o"


def test_a_client_that_does_not_read_does_not_block_the_worker(serve):
    s = serve(workers=1)
    greedy = s.connect()
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.sendall(b"".join(post("/mi", size_request(str(i))) for i in range(3000)))
    other = s.connect()
    other.sendall(post("/mi", size_request("o")))
    assert json.loads(read_reply(other, bytearray()).body)["id"] == "o"


def test_a_worker_at_its_connection_cap_accepts_again_when_one_closes(serve):
    # a long idle timeout: only the close below may free the worker's slot
    s = serve(workers=1, max_connections=3, idle_timeout=60)
    held = [s.connect() for _ in range(3)]
    for sock in held:  # each is served: the worker took all three
        sock.sendall(post("/mi", size_request("held")))
        assert read_reply(sock, bytearray()).status == 200
    extra = s.connect()  # completes in the kernel's backlog; the worker does not take it
    extra.sendall(post("/mi", size_request("extra")))
    extra.settimeout(0.5)
    try:
        early = extra.recv(1)
    except TimeoutError:
        early = None
    assert early is None  # not served while the worker is full
    held[1].close()
    extra.settimeout(10)
    reply = read_reply(extra, bytearray())
    assert reply.status == 200 and b'"extra"' in reply.body
    for sock in (held[0], held[2], extra):
        sock.close()


def test_a_client_reset_after_its_late_request_frees_its_place_under_the_cap(core):
    """A client that connects, waits (the compiled path: a waiting descriptor), sends its
    request and resets the connection: the worker, at its cap of one with it, takes new
    connections again once it is gone, as after any other close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    cfg = HttpConfig(port=listener.getsockname()[1])
    worker = Worker(listener, make_wsgi_app(core.handle, cfg), cfg, max_connections=1,
                    checked=core.run_checked)
    worker.resume_accepting()
    try:
        silent = socket.create_connection(listener.getsockname())
        for _ in range(100):
            worker.poll_once(0.05)
            if worker.open_count():
                break
        assert worker.open_count() == 1 and not worker.accepting  # at the cap
        silent.sendall(post("/mi", size_request("gone")))
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        silent.close()  # a reset: the reply cannot be sent, the peer name is gone
        for _ in range(100):
            worker.poll_once(0.05)
            if not worker.open_count():
                break
        assert worker.open_count() == 0
        assert worker.accepting  # the place is free again
        extra = socket.create_connection(listener.getsockname())
        extra.sendall(post("/mi", size_request("extra")))
        extra.setblocking(False)
        out = b""
        for _ in range(100):
            worker.poll_once(0.05)
            try:
                out += extra.recv(65536)
            except BlockingIOError:
                continue
            if b'"extra"' in out:
                break
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b'"extra"' in out
        extra.close()
    finally:
        for conn in list(worker.conns.values()):
            worker.close(conn)
        for fd in list(worker.waiting):
            worker.close_waiting(fd)
        worker.ep.close()
        listener.close()
