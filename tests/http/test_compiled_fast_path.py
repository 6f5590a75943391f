"""The HTTP worker's compiled fast path (mi_server/http/_fastpath.c) against the Python
path it stands in for.

Two workers in this process, one with the compiled path and one without, each over its
own MI core and engine holding the same items, get the same bytes (through accept() or
on a connection they already have) and must answer byte for byte the same (the Date
value aside, which is checked on its own), close or keep the connection alike, and leave
their queues alike.  The generated requests are mostly of the shape the compiled path
takes, and variations of it that it must hand to the Python path (another method, path,
version or field, a guarded Host or Origin, a body not of the narrow shape, over the
limit, split or pipelined).  Every test here runs twice: the compiled side with the MI's
compiled commands (mi_server/mi/compiled.py, as servers run it) and without them (every
request it serves goes to MICore.run_checked).  (Whole servers both ways:
tests/http/conftest.py runs every HTTP test twice.)
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import time
from email.utils import formatdate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_server.config import HttpConfig
from mi_server.engine import Arena
from mi_server.engine.spec import QueueSpec
from mi_server.http import bind, fastpath
from mi_server.http.app import make_wsgi_app
from mi_server.http.prefork import fork_workers, stop_workers
from mi_server.http.server import Connection, Worker
from mi_server.mi import build_core, compiled
from mi_server.mi.context import MIContext
from tests.http.rawhttp import post, read_reply

pytestmark = pytest.mark.skipif(not fastpath.built(),
                                reason="mi_server.http._fastpath was not built")
LIMIT = 300  # http.max_request here: some generated bodies are over it
PREFILL = 3000
_DATE = re.compile(rb"\r\nDate: ([^\r]*)\r\n")


@pytest.fixture(autouse=True, params=["compiled"])
def http_path(request) -> str:  # this module compares both paths itself
    return request.param


class Side:
    """One worker (compiled or not) with its own core, engine and listening socket."""

    def __init__(self, fast: bool, port: int, commands: bool = False) -> None:
        compiled_side = fast
        self.arena = Arena.create(f"mqhttpfp{os.getpid()}_{compiled_side:d}_{time.monotonic_ns()}",
                                  1 << 22, [QueueSpec("q1"), QueueSpec("q2")])
        for i in range(PREFILL):
            self.arena.add("q1", f"k{i}", f"v{i}")
        self.core = build_core(MIContext(engine=self.arena, started=0.0))
        # the guard's port is the configured one, the same for both sides
        self.cfg = HttpConfig(port=port, root="mi", max_request=LIMIT)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.calls = 0  # requests the compiled path handed to the MI core
        self.handled = 0  # requests the Python path served

        def counted(method, params, id_text):
            self.calls += 1
            return self.core.run_checked(method, params, id_text)

        def handle(body):
            self.handled += 1
            return self.core.handle(body)

        self.commands = compiled.load(self.core) if commands else None
        assert (self.commands is not None) == commands
        self.worker = Worker(self.listener, make_wsgi_app(handle, self.cfg),
                             self.cfg, checked=counted if compiled_side else None,
                             commands=self.commands)
        assert (self.worker.fast_serve is not None) == compiled_side
        self.worker.resume_accepting()
        self.worker.now = time.monotonic()

    def exchange(self, data: bytes, way: str, then: bytes = b"") -> tuple:
        """data sent on a new connection (`way` "accepted": taken by accept(); "accepted
        by poll": by Worker.poll_once) or on one
        the worker holds already ("held": read by Worker.read; "polled": waited for and
        read by Worker.poll_once, in the compiled poll on the compiled side); then
        `then`, once the first answer is in: (replies, the Date values, closed by the
        worker, connection state)."""
        if way in ("accepted", "accepted by poll"):
            client = socket.create_connection(self.listener.getsockname())
            client.sendall(data)
            if way == "accepted":
                self.worker.accept()
            else:  # the listener's event, in the compiled poll on the compiled side
                self.worker.poll_once(0.0)
            conn = next((c for c in self.worker.conns.values()), None)
        else:
            server, client = socket.socketpair()
            server.setblocking(False)
            conn = Connection(server, ("127.0.0.1", 40000), self.worker)
            self.worker.conns[conn.fd] = conn
            self.worker.watch(conn, select.EPOLLIN)
            client.sendall(data)
            self.take(conn, way)
        out, dates = self.drain(client, conn)
        if then and conn is not None and conn.fd in self.worker.conns:
            client.sendall(then)
            self.take(conn, way)
            more, more_dates = self.drain(client, conn)
            out += more
            dates += more_dates
        client.setblocking(False)
        try:
            eof = client.recv(1) == b""
        except BlockingIOError:
            eof = False
        except ConnectionResetError:
            eof = True
        kept = conn is not None and conn.fd in self.worker.conns
        state = (kept, kept and bool(conn.linger_until), kept and conn.closing)
        if conn is not None:
            self.worker.close(conn)
        client.close()
        return _DATE.sub(b"\r\nDate: -\r\n", out), dates, eof, state

    def take(self, conn: Connection, way: str) -> None:
        """The worker reads what came on conn, as `way` says (see exchange)."""
        if way == "polled":
            self.worker.settle(conn)  # as after any event the loop handled
            self.worker.poll_once(0.0)
        else:
            self.worker.read(conn)

    def drain(self, client: socket.socket, conn) -> tuple[bytes, list[bytes]]:
        client.setblocking(False)
        out = b""
        while True:
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                if conn is not None and conn.out and conn.fd in self.worker.conns:
                    self.worker.write(conn)
                    continue
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out, _DATE.findall(out)

    def close(self) -> None:
        for conn in list(self.worker.conns.values()):
            self.worker.close(conn)
        self.worker.ep.close()
        self.listener.close()
        self.arena.close()
        self.arena.unlink()


@pytest.fixture(scope="module", params=["commands", "core"])
def sides(request):
    """(compiled side, Python side); the compiled side with the MI's compiled commands or
    with every request going to the MI core."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pair = Side(True, port, request.param == "commands"), Side(False, port)
    yield pair
    for side in pair:
        side.close()


# -- generated requests -------------------------------------------------------------------
_plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e, exclude_characters='"\\'),
                 max_size=8)
_string = st.one_of(_plain, st.text(max_size=6))  # the second may need escapes
_names = st.sampled_from(["q1", "q2", "nosuch", "", "Q1"])
# JSON text as written; None: no id (a notification)
_ids = st.one_of(st.integers(-10**10, 10**10).map(json.dumps), _string.map(json.dumps),
                 st.sampled_from(["-0", "007", "1.5", "1e3", "null", "true", "[1]", "{}"]),
                 st.sampled_from(['"1"', "1", "2"]), st.just(None))
_methods = st.sampled_from(["mq_get_size", "mq_get_sizes", "mq_fetch", "mq_fetch",
                            "nosuch", "MQ_GET_SIZE", "which"])


@st.composite
def bodies(draw) -> bytes:
    members = {"jsonrpc": json.dumps(draw(st.sampled_from(["2.0"] * 7 + ["1.0"])))}
    members["method"] = json.dumps(draw(_methods))
    shape = draw(st.sampled_from(["list", "named", "none", "empty", "limit", "odd"]))
    name = draw(_names)
    if shape == "list":
        members["params"] = json.dumps([name, *draw(st.lists(_plain, max_size=2))])
    elif shape == "named":
        members["params"] = json.dumps({"name": name})
    elif shape == "empty":
        members["params"] = draw(st.sampled_from(["[]", "{}"]))
    elif shape == "limit":
        members["params"] = json.dumps({"name": name, "limit": draw(
            st.sampled_from(["2", "0", 2]))})
    elif shape == "odd":
        members["params"] = draw(st.sampled_from(['"q1"', "[1]", '["q1",null]', "null"]))
    id_ = draw(_ids)
    if id_ is not None:
        members["id"] = id_
    if draw(st.integers(0, 9)) == 0:
        key = draw(st.sampled_from(["id", "method", "jsonrpc"]))
        if key in members:
            members[draw(st.sampled_from([key.upper(), key]))] = members[key]  # case, dup
    items = list(members.items())
    items = draw(st.permutations(items))
    ws = draw(st.sampled_from(["", " ", "\n", "\t ", "\r\n"]))
    text = "{" + ws + ("," + ws).join(f'"{k}"{ws}:{ws}{v}' for k, v in items) + ws + "}"
    tail = draw(st.sampled_from(["", "", "", "", " ", "\n", " x", " " * 300]))
    return (draw(st.sampled_from(["", " ", "\n"])) + text + tail).encode()


_fields = st.sampled_from([
    "Host: 127.0.0.1:{port}", "Host: localhost:{port}", "Host: 127.0.0.1:1",
    "Host: evil.example", "host: 127.1:{port}", "Host: 127.0.0.1:{port} ",
    "Content-Type: application/json", "User-Agent: probe/1.0", "Accept: */*",
    "Connection: close", "Connection: keep-alive", "connection: Close", "Connection: upgrade",
    "Connection: close, te", "Transfer-Encoding: chunked", "Expect: 100-continue",
    "Origin: http://evil.example", "Origin: http://127.0.0.1:{port}", "Sec-Fetch-Site: cross-site",
    "Content_Length: 5", "X-Empty:", "X-Tab: a\tb", "Upgrade: websocket",
    "Proxy-Connection: close", "Authorization: Basic Zm9vOmJhcg==", "X-Big: " + "b" * 17000,
    "Content-Length: 3", "X-Obs: \xe9",
])


_benign = st.sampled_from([
    "Host: 127.0.0.1:{port}", "Content-Type: application/json", "User-Agent: probe/1.0",
    "Accept: */*", "Connection: close", "Connection: keep-alive", "Accept-Encoding: identity",
])


@st.composite
def requests(draw, port: int) -> tuple[bytes, str, bytes]:
    """(bytes, the way they reach the worker, bytes sent after the first answer; see
    Side.exchange): half of them the
    common request with only its body varied, the others varied everywhere."""
    body = draw(bodies())
    common = draw(st.booleans())
    if common:
        method, target, version = "POST", "/mi", "HTTP/1.1"
        fields = [f.format(port=port) for f in draw(st.lists(_benign, max_size=3))]
        length = len(body)
        framing = "one"
    else:
        method = draw(st.sampled_from(["POST"] * 8 + ["GET", "post", "PUT"]))
        target = draw(st.sampled_from(["/mi"] * 6 + ["/mi/", "/mi?x=1", "/m%69", "/other",
                                                       "/mi/x", "http://127.0.0.1/mi"]))
        version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0"]))
        fields = [f.format(port=port) for f in draw(st.lists(_fields, max_size=3))]
        length = len(body) + draw(st.sampled_from([0] * 8 + [-1, 1]))
        framing = draw(st.sampled_from(["one"] * 6 + ["split", "pipelined", "then"]))
    if common or draw(st.integers(0, 7)):
        fields.insert(draw(st.integers(0, len(fields))), f"Content-Length: {length}")
    head = "\r\n".join([f"{method} {target} {version}", *fields]) + "\r\n\r\n"
    data = head.encode("latin-1") + body
    then = b""
    if framing == "split":
        cut = draw(st.integers(1, len(data) - 1))
        data, then = data[:cut], data[cut:]
    elif framing in ("pipelined", "then"):
        other = post("/mi", b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q1"],"id":7}')
        if framing == "pipelined":
            data += other
        else:
            then = other
    return data, draw(st.sampled_from(["accepted", "accepted by poll", "held", "polled"])), then


@pytest.fixture(scope="module")
def guard_port(sides) -> int:
    return sides[0].cfg.port


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_the_compiled_path_answers_as_the_python_path(sides, data):
    compiled, python = sides
    request, way, then = data.draw(requests(compiled.cfg.port))
    a = compiled.exchange(request, way, then)
    b = python.exchange(request, way, then)
    assert a[0] == b[0], request
    assert a[2:] == b[2:], request
    assert len(a[1]) == len(b[1])
    for date in a[1]:  # the compiled path's own Date: formatdate's form, of now
        assert date in {formatdate(t, usegmt=True).encode() for t in
                        range(int(time.time()) - 2, int(time.time()) + 1)}
    assert compiled.arena.size("q1") == python.arena.size("q1")


def test_the_generated_requests_reach_the_compiled_path(sides):
    """The comparison above is worth something only if the compiled path served many of
    its requests, and this is the request clients send (opensips-cli, the probes)."""
    compiled, python = sides
    before, handled = compiled.calls, compiled.handled
    body = b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":"1"}'
    for way in ("accepted", "accepted by poll", "held", "polled"):
        for extra in ((), ("Connection: close",), (f"Host: 127.0.0.1:{compiled.cfg.port}",)):
            request = post("/mi", body, *extra)
            a, b = compiled.exchange(request, way), python.exchange(request, way)
            assert a[0] == b[0] and a[0].startswith(b"HTTP/1.1 200 OK\r\n")
            assert a[2:] == b[2:]
    # answered by the compiled commands, or by the MI core the compiled path called
    assert compiled.calls - before == (0 if compiled.commands else 12)
    assert compiled.handled == handled
    assert python.calls == 0


def test_the_compiled_poll_answers_a_kept_connection_itself(sides):
    """A keep-alive request on a connection between requests is answered inside the
    compiled poll: nothing comes back to the loop, the connection stays in `fast`, and
    the sweep restarts its idle clock from `seen`."""
    compiled, _ = sides
    worker = compiled.worker
    server, client = socket.socketpair()
    server.setblocking(False)
    conn = Connection(server, ("127.0.0.1", 40000), worker)
    worker.conns[conn.fd] = conn
    worker.watch(conn, select.EPOLLIN)
    worker.settle(conn)
    assert conn.fd in worker.fast
    before, handled, conn.last = compiled.calls, compiled.handled, 0.0
    client.sendall(post("/mi", b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],'
                               b'"id":3}'))
    events = worker.fast_poll(worker.ep.fileno(), worker.fast_ctx, worker.fast,  # type: ignore
                              worker.seen, 0.0, 64, -1, 0)
    assert events == [] and compiled.handled == handled
    assert compiled.calls == before + (0 if compiled.commands else 1)
    assert read_reply(client, bytearray()).status == 200
    assert conn.fd in worker.fast and conn.fd in worker.seen
    worker.now = time.monotonic()
    worker.sweep()
    assert conn.last == worker.now and not worker.seen and conn.fd in worker.conns
    worker.close(conn)
    assert conn.fd not in worker.fast
    client.close()


def test_a_guarded_request_is_never_served_by_the_compiled_path(sides):
    compiled, _ = sides
    before = compiled.calls
    body = b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q1"],"id":1}'
    size = compiled.arena.size("q1")
    for extra in ("Host: evil.example", "Origin: http://evil.example",
                  "Sec-Fetch-Site: cross-site", "Host: 127.0.0.1:1"):
        out = compiled.exchange(post("/mi", body, extra), "held")[0]
        assert out.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert compiled.calls == before
    assert compiled.arena.size("q1") == size


def test_a_reply_the_socket_does_not_take_at_once_is_sent_later(sides):
    """A big reply over small socket buffers: the rest goes out on EPOLLOUT, as in Python."""
    compiled, python = sides
    outs = []
    for side in (compiled, python):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(side.listener.getsockname())
        for _ in range(100):
            try:
                server, peer = side.listener.accept()
                break
            except BlockingIOError:
                time.sleep(0.01)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server.setblocking(False)
        conn = Connection(server, peer, side.worker)
        side.worker.conns[conn.fd] = conn
        side.worker.watch(conn, select.EPOLLIN)
        body = b'{"jsonrpc":"2.0","method":"mq_fetch","params":{"name":"q1","limit":"250"},"id":1}'
        client.sendall(post("/mi", body))
        side.worker.read(conn)
        assert conn.out  # not all taken
        out, _ = side.drain(client, conn)
        assert out.count(b'"key"') == 250 and not conn.out
        outs.append(_DATE.sub(b"", out))
        side.worker.close(conn)
        client.close()
    assert outs[0] == outs[1]
    assert compiled.arena.size("q1") == python.arena.size("q1")


def test_a_stop_signal_during_the_command_closes_after_its_reply(port):
    """SIGTERM while the compiled path runs a command: that reply says Connection: close
    and the connection ends, as the Python path does (stop_requested)."""
    cfg = HttpConfig(port=port)
    arena = Arena.create(f"mqhttpfpstop{os.getpid()}_{time.monotonic_ns()}", 1 << 20,
                         [QueueSpec("q1")])
    core = build_core(MIContext(engine=arena, started=0.0))

    def slow(method, params, id_text):
        os.kill(os.getpid(), signal.SIGTERM)  # handled (stop_requested) before the reply
        return core.run_checked(method, params, id_text)

    sock = bind(cfg)
    try:
        pids = fork_workers(sock, core.handle, cfg, 1, checked=slow)
    finally:
        sock.close()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(post("/mi", b'{"jsonrpc":"2.0","method":"mq_get_size",'
                                  b'"params":["q1"],"id":1}'))
            reply = read_reply(s, bytearray())
            assert reply.status == 200 and reply.headers.get("connection") == "close"
            assert s.recv(100) == b""
    finally:
        statuses = stop_workers(pids)
        arena.close()
        arena.unlink()
    assert all(os.waitstatus_to_exitcode(v) == 0 for v in statuses.values())



def test_the_compiled_poll_serves_and_closes_a_waiting_connection_itself(sides):
    """A connection accepted before its request came waits as a bare descriptor; its
    Connection: close exchange is then answered and closed inside the compiled poll,
    which returns nothing and takes the descriptor out of `waiting`."""
    compiled, _ = sides
    worker = compiled.worker
    client = socket.create_connection(compiled.listener.getsockname())
    worker.accept()  # nothing to read yet
    (fd,) = list(worker.waiting)
    handled, calls = compiled.handled, compiled.calls
    client.sendall(post("/mi", b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],'
                               b'"id":5}', "Connection: close"))
    time.sleep(0.05)
    events = worker.fast_poll(worker.ep.fileno(), worker.fast_ctx, worker.fast,
                              worker.seen, 0.0, 64, -1, 1, worker.waiting)
    assert events == [] and fd not in worker.waiting and compiled.handled == handled
    assert compiled.calls == calls + (0 if compiled.commands else 1)
    reply = read_reply(client, bytearray())
    assert reply.status == 200 and json.loads(reply.body)["id"] == 5
    assert client.recv(1) == b""  # and closed
    client.close()


def test_a_waiting_connection_closed_under_the_cap_is_handed_back(sides):
    """With no room left (the listener out of the set), the close is reported, so that
    the worker takes new connections again; a kept connection is handed over to adopt."""
    compiled, _ = sides
    worker = compiled.worker
    gone = socket.create_connection(compiled.listener.getsockname())
    kept = socket.create_connection(compiled.listener.getsockname())
    worker.accept()
    time.sleep(0.05)
    worker.accept()
    assert len(worker.waiting) == 2
    gone.close()  # end of file
    kept.sendall(post("/mi", b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],'
                             b'"id":6}'))
    time.sleep(0.05)
    events = worker.fast_poll(worker.ep.fileno(), worker.fast_ctx, worker.fast,
                              worker.seen, 0.0, 64, -1, 0, worker.waiting)
    assert not worker.waiting
    assert sorted(type(e[2]).__name__ for e in events) == ["bool", "bool"]
    assert {e[2] for e in events} == {False, True}
    for event in events:
        worker.first_took(event[0], event[2])
    assert json.loads(read_reply(kept, bytearray()).body)["id"] == 6
    assert len(worker.conns) == 1
    for conn in list(worker.conns.values()):
        worker.close(conn)
    kept.close()


class _Fatal(BaseException):
    """Not an Exception: the compiled path lets it through (as KeyboardInterrupt)."""


def test_connections_the_compiled_poll_took_are_closed_when_it_fails():
    """A callback raising a BaseException ends the compiled poll with it; a connection its
    accept took earlier in that wait is then no one's: it is closed (as accept() closes
    those it took before such an error), not left open for the client to wait on."""
    def fatal(method, params, id_text):
        raise _Fatal

    ctx = (b"/mi", LIMIT, 16384, fatal, lambda host, origin, site: True, {}, bytearray(1), None)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    ep = select.epoll()
    server, client = socket.socketpair()
    server.setblocking(False)
    try:
        ep.register(listener.fileno(), select.EPOLLIN)
        ep.register(server.fileno(), select.EPOLLIN)
        # ready in this order: the new connection (nothing sent yet, so handed over), then
        # the held one's request, whose command raises
        taken = socket.create_connection(listener.getsockname(), timeout=2)
        time.sleep(0.05)
        client.sendall(post("/mi", b'{"jsonrpc":"2.0","method":"mq_get_size",'
                                   b'"params":["q1"],"id":1}'))
        with pytest.raises(_Fatal):
            fastpath._poll(ep.fileno(), ctx, {server.fileno()}, set(),  # type: ignore
                           1.0, 64, listener.fileno(), 10)
        try:
            closed = taken.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        assert closed, "the accepted connection was left open"
        taken.close()
    finally:
        ep.close()
        server.close()
        client.close()
        listener.close()
