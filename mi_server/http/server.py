"""One pre-forked HTTP/1.1 worker: an epoll loop over non-blocking sockets.

Every worker process accepts from the same listening socket (see listen.bind) and serves
its connections itself: keep-alive, pipelining (answers in order), `Expect: 100-continue`,
idle/slow-client timeouts, and a graceful stop on SIGTERM/SIGINT. httptools (llhttp, C)
parses; the WSGI app from app.make_wsgi_app decides every response, including the early
413 for an oversized body, so the HTTP behaviour has one definition. Chosen over
gunicorn by measurement (benchmarks/http_serving_options.py): same app, 1/7 (keep-alive)
to 1/3 (Connection: close) of gunicorn's server CPU per request.

What is deliberately the transport's own: a malformed request gets a fixed 400 and the
connection is closed; a head (request line and header fields) over MAX_HEAD gets a fixed
431, as libmicrohttpd (OpenSIPS httpd) answers a head that overflows its buffer, however
the bytes arrive; bodies over the limit are never buffered beyond limit + 1 bytes.
(A compiled fast path for the common request must keep both limits: MAX_HEAD counted as
Connection.head_bytes counts it, and the body limit.)

The common MI request (`POST <root>` with a Content-Length body of the usual JSON-RPC
shape, whole in one read) is answered by the compiled fast path where it is built
(fastpath.py, _fastpath.c), which asks the MI's compiled commands (`commands`,
mi_server/mi/compiled.py) and then the MI core's checked stage (`checked`,
MICore.run_checked) itself and writes the same bytes this loop and the app would; every
other request, and every other byte on a connection, still goes through httptools and
the app, which define the behaviour.  With it, the compiled path's poll is the loop's
epoll_wait too, and answers there the requests of connections between requests
(Worker.fast, Worker.settle), returning to this loop only what needs it.  Off when `auth`
is configured, or with MQMI_HTTP_FASTPATH=0.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from . import fastpath
from .app import UNSUPPORTED_TEXT, Handle, HttpSettings, WSGIApplication, make_wsgi_app
from .guard import make_guard

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 5.0  # keep-alive connection waiting for its next request
REQUEST_TIMEOUT = 10.0  # a request must arrive whole within this; a reply must keep moving
DRAIN_TIMEOUT = 10.0  # on stop: longest wait for in-flight requests
# Open connections per worker.  At the cap a worker stops accepting (the listening socket
# leaves its epoll set, so it is not woken in vain and EPOLLEXCLUSIVE wakes another worker);
# when every worker is full, new clients wait in the kernel's backlog until a connection
# closes (idle ones within IDLE_TIMEOUT).  Keeps a flood of connections from exhausting the
# worker's descriptors, which would also break the replies of the connections it has.
MAX_CONNECTIONS = 1000
CAP_WARN_EVERY = 60.0  # seconds: a flood at the cap logs once a minute, not per connection
LINGER_TIMEOUT = 2.0  # after an error reply: read and drop the rest before closing
MAX_HEAD = 16384  # URL + header fields (names, values, 4 bytes of ": " and CRLF each)
RECV_SIZE = 65536
SWEEP_EVERY = 0.5
# events taken per epoll_wait: Python's default (FD_SETSIZE - 1) allocates a 12 KiB event
# array on every call; more ready descriptors are simply returned by the next call
POLL_EVENTS = 64
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLERR = select.EPOLLERR | select.EPOLLHUP

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Request"
)
# a method token the parser does not know ("post", "FOO"): OpenSIPS answers any method
# but GET and POST, case-sensitively, with its 406 page (app.py answers the known ones)
_UNSUPPORTED = (
    b"HTTP/1.1 406 Not Acceptable\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n<html><body>%b</body></html>"
    % (len(UNSUPPORTED_TEXT) + 26, UNSUPPORTED_TEXT)
)
_REQUEST_LINE = re.compile(rb"(?:^|\n)[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ \r\n]+ HTTP/1\.[01]\r?\n")
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 31\r\nConnection: close\r\n\r\nRequest Header Fields Too Large"
)
_SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 21\r\nConnection: close\r\n\r\nInternal Server Error"
)
_EMPTY_INPUT = io.BytesIO(b"")
# MICore.run_checked(method, params, id_text) -> reply bytes (see fastpath.py)
Checked = Callable[[str, Any, str], "bytes | None"]
_SPECIAL = {"CONTENT_TYPE", "CONTENT_LENGTH"}
_header_keys: dict[bytes, str | None] = {}  # raw header name -> environ key (bounded cache)


def _environ_key(name: bytes) -> str | None:
    key = _header_keys.get(name)
    if key is None and name not in _header_keys:
        # A name with "_" could pose as another header once "-" becomes "_"
        # (Content_Length vs Content-Length): drop it, as gunicorn does.
        if b"_" not in name:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key not in _SPECIAL:
                key = "HTTP_" + key
        if len(_header_keys) < 512:
            _header_keys[name] = key
    return key


class _Stop(Exception):
    """Raised from a parser callback: stop parsing this connection's bytes."""


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the head is over MAX_HEAD; answer 431 and close."""


class Connection:
    """One client connection: httptools callbacks collect complete requests in order."""

    __slots__ = (
        "sock", "fd", "peer", "parser", "worker", "mask", "out", "requests", "closing",
        "broken", "linger_until", "last", "in_message", "in_head", "head_bytes", "url",
        "headers", "body", "body_len", "environ", "chunked", "message_started",
        "head_raw", "head_too_large", "completed", "bad_method",
    )

    def __init__(self, sock: socket.socket, peer: Any, worker: Worker) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.worker = worker
        self.parser = httptools.HttpRequestParser(self)
        self.mask = 0  # epoll interest; 0 = not registered yet
        self.out = b""  # reply bytes the socket has not taken yet
        self.requests: list[Any] = []  # (environ, keep_alive) or _CONTINUE, in order
        self.closing = False  # close once the queued replies are sent
        self.broken = False  # malformed input seen: answer 400 after the queued replies
        self.linger_until = 0.0
        self.last = worker.now
        self.in_message = False
        self.in_head = False
        self.head_bytes = 0  # URL and complete header fields of the head being read
        self.head_raw = 0  # bytes of the reads that began and ended inside that head
        self.head_too_large = False  # the 400 due after the queued replies is a 431
        self.bad_method = False  # ... or OpenSIPS's 406 page (an unknown method token)
        self.completed = False  # a message was completed during the current read

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = self.in_head = True
        # Timed from the first byte: a client trickling a byte now and then must not hold
        # the connection (and its buffers) for ever.
        self.message_started = self.worker.now
        self.head_bytes = self.head_raw = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_len = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here, whatever the reads were: a whole oversized head in one read is
        # refused as surely as one trickled in (read() bounds the field still in progress).
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            raise _HeadTooLarge
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        environ = self.environ = self.worker.environ(self)
        declared = environ.get("CONTENT_LENGTH")
        encoding = environ.get("HTTP_TRANSFER_ENCODING", "")
        self.chunked = declared is None and "chunked" in encoding.lower()
        if self.chunked:
            environ.pop("HTTP_TRANSFER_ENCODING")  # the app gets the de-chunked body
        elif declared and int(declared) > self.worker.limit:
            # Too large by its own account: let the app answer now, from the header
            # alone (413, or whatever it checks first), and read no body at all.
            environ["wsgi.input"] = _EMPTY_INPUT
            self.requests.append((environ, False))
            raise _Stop
        if environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            if self.parser.get_http_version() == "1.1":
                self.requests.append(_CONTINUE)

    def on_body(self, data: bytes) -> None:
        self.body.append(data)
        self.body_len += len(data)
        if self.body_len > self.worker.limit:  # only chunked bodies get here
            environ = self.environ
            environ["wsgi.input"] = io.BytesIO(b"".join(self.body)[: self.worker.limit + 1])
            environ["wsgi.input_terminated"] = True
            self.requests.append((environ, False))
            raise _Stop

    def on_message_complete(self) -> None:
        self.in_message = False
        self.completed = True
        environ = self.environ
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        environ["wsgi.input"] = io.BytesIO(body)
        if self.chunked:
            environ["CONTENT_LENGTH"] = str(len(body))
        self.requests.append((environ, self.parser.should_keep_alive()))

    def idle(self) -> bool:
        return not (self.in_message or self.out or self.requests)


class Worker:
    """The loop of one worker process; run_worker builds one and calls serve()."""

    def __init__(self, sock: socket.socket, app: WSGIApplication, cfg: HttpSettings,
                 idle_timeout: float = IDLE_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, web: Any = None,
                 checked: Checked | None = None, commands: Any = None) -> None:
        self.listener = sock
        self.max_connections = max_connections
        self.accepting = False  # the listening socket is in the epoll set
        self.cap_warned = -CAP_WARN_EVERY  # when the cap was last logged
        self.app = app
        self.limit = cfg.max_request
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.conns: dict[int, Connection] = {}
        # Connections the compiled accept() took before their first bytes had arrived
        # (a client connects, then sends): just a descriptor in the epoll set, and its
        # accept time, until that first read; see first_read.
        self.waiting: dict[int, float] = {}
        self.ep = select.epoll()
        self.now = time.monotonic()
        self.stop_requested = False
        self.stopping = False
        self.date_second = 0
        self.date_line = ""
        host, port = sock.getsockname()[:2]
        self.base_environ = {
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "SERVER_NAME": host, "SERVER_PORT": str(port), "SCRIPT_NAME": "",
        }
        self._status = ""
        self._headers: list[tuple[str, str]] = []
        # set by the stop signal's handler, read by the compiled path (stop_requested's copy)
        self.stop_flag = bytearray(1)
        self.fast_serve: fastpath.Serve | None = None
        self.fast_accept: fastpath.Accept | None = None
        self.fast_poll: fastpath.Poll | None = None
        # the connections the compiled poll may read (between requests: see settle), and
        # those it answered since the last sweep (their idle clocks restart there)
        self.fast: set[int] = set()
        self.seen: set[int] = set()
        self.listen_fd = sock.fileno()
        self.wake_r: socket.socket | None = None
        compiled = fastpath.load() if checked is not None and cfg.auth is None else None
        root = ("/" + cfg.root.strip("/")).encode("latin-1", "replace")
        # a root the app can never match as written ("?"), or matches only %-decoded
        if compiled is not None and b"?" not in root and b"%" not in root:
            self.fast_serve, self.fast_accept, self.fast_poll = compiled
            # the answers of this guard for the Host values seen are kept in the dict
            self.fast_ctx = (root, self.limit, MAX_HEAD, checked, make_guard(cfg), {},
                             self.stop_flag, commands)

    # -- requests -> environ -> app -> bytes --------------------------------------------
    def environ(self, conn: Connection) -> dict[str, Any]:
        url = conn.url
        if url[:1] != b"/":  # absolute form (http://host/mi) or "*"
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"", parsed.query or b""
        else:
            path, _, query = url.partition(b"?")
        text = path.decode("latin-1")
        if "%" in text:
            text = unquote_to_bytes(text).decode("latin-1")
        environ = self.base_environ.copy()
        environ["REQUEST_METHOD"] = conn.parser.get_method().decode("latin-1")
        environ["PATH_INFO"] = text
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + conn.parser.get_http_version()
        environ["REMOTE_ADDR"] = conn.peer[0] if isinstance(conn.peer, tuple) else ""
        for name, value in conn.headers:
            key = _environ_key(name)
            if key is None:
                continue
            if key in environ:
                environ[key] += "," + value.decode("latin-1")
            else:
                environ[key] = value.decode("latin-1")
        return environ

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> None:
        self._status = status
        self._headers = headers

    def respond(self, environ: dict[str, Any], keep_alive: bool) -> tuple[bytes, bool]:
        """Run the app for one request: the reply bytes, and whether to keep the connection."""
        result = self.app(environ, self.start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        # A stop signal that arrived while the command ran: this reply is the last one.
        keep_alive = keep_alive and not self.stop_requested
        parts = ["HTTP/1.1 ", self._status, "\r\n"]
        has_length = False
        for key, value in self._headers:
            parts += (key, ": ", value, "\r\n")
            if len(key) == 14 and key.lower() == "content-length":
                has_length = True
        if not has_length:
            parts += ("Content-Length: ", str(len(body)), "\r\n")
        second = int(time.time())
        if second != self.date_second:
            self.date_second = second
            self.date_line = "Date: " + formatdate(second, usegmt=True) + "\r\n"
        parts.append(self.date_line)
        if not keep_alive:
            parts.append("Connection: close\r\n")
        elif environ["SERVER_PROTOCOL"] == "HTTP/1.0":
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        head = "".join(parts).encode("latin-1")
        return (head if environ["REQUEST_METHOD"] == "HEAD" else head + body), keep_alive

    def replies(self, conn: Connection) -> bytes:
        """The replies to the complete requests queued on conn, in order."""
        items, conn.requests = conn.requests, []
        out = []
        last = len(items) - 1
        for i, item in enumerate(items):
            if item is _CONTINUE:
                out.append(item)
                continue
            environ, keep_alive = item
            if conn.closing and i == last:
                keep_alive = False  # stopping, or nothing more can be read
            try:
                reply, keep_alive = self.respond(environ, keep_alive)
                out.append(reply)
            except Exception:
                log.exception("HTTP request failed")
                out.append(_SERVER_ERROR)
                keep_alive = False
            if not keep_alive:
                conn.closing = True
                conn.broken = False  # the close already ends the exchange
                break
        if conn.broken:
            out.append(_HEAD_TOO_LARGE if conn.head_too_large
                       else _UNSUPPORTED if conn.bad_method else _BAD_REQUEST)
            conn.closing = True
        return out[0] if len(out) == 1 else b"".join(out)

    # -- socket events ------------------------------------------------------------------
    def accept(self) -> None:
        if self.fast_accept is not None:
            self.accept_compiled()
            return
        for _ in range(16):  # a few per wake-up, so one busy worker does not take them all
            if not self.accepting:
                return  # at the cap (see MAX_CONNECTIONS)
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: keep serving what we have
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, peer, self)
            self.conns[conn.fd] = conn
            # The request has usually arrived with the connection: read it now and
            # skip one epoll round trip (for Connection: close clients, the only one).
            self.read(conn)
            if conn.fd in self.conns and conn.mask == 0:
                self.watch(conn, _EPOLLIN)
            # counted after that read: a Connection: close exchange is often over already
            if len(self.conns) >= self.max_connections:
                self.pause_accepting()
                if self.now - self.cap_warned > CAP_WARN_EVERY:
                    self.cap_warned = self.now
                    log.warning("%d open connections: not accepting more until one "
                                "closes", len(self.conns))

    def accept_compiled(self) -> None:
        """accept() by the compiled path: it serves and closes the Connection: close
        exchanges it takes whole; the connections it hands back become Connections here."""
        if not self.accepting:
            return  # at the cap (see MAX_CONNECTIONS)
        try:
            taken = self.fast_accept(self.listener.fileno(), self.fast_ctx,  # type: ignore
                                     self.max_connections - self.open_count())
        except OSError as exc:  # EMFILE and the like: keep serving what we have
            log.warning("accept failed: %s", exc)
            return
        self.took_accepted(taken)

    def took_accepted(self, taken: list) -> None:
        """The connections the compiled accept handed over (see fastpath.Accept)."""
        for fd, got in taken:
            if got is None:  # nothing to read yet: wait for it as a bare descriptor
                self.ep.register(fd, _EPOLLIN)
                self.waiting[fd] = self.now
            else:
                self.adopt(fd, got, 0)
            if self.open_count() >= self.max_connections:
                self.pause_accepting()
                if self.now - self.cap_warned > CAP_WARN_EVERY:
                    self.cap_warned = self.now
                    log.warning("%d open connections: not accepting more until one "
                                "closes", self.open_count())

    def adopt(self, fd: int, got: Any, mask: int) -> None:
        """A descriptor of the compiled path becomes a Connection, given what the
        compiled path did with its first read (`mask`: its epoll interest so far)."""
        sock = socket.socket(fileno=fd)
        try:
            sock.setblocking(False)
            peer = sock.getpeername()
        except OSError:
            sock.close()  # gone already (closing it leaves the epoll set too)
            # a waiting descriptor (first_read) held a place under the cap until now
            self.accept_again()
            return
        conn = Connection(sock, peer, self)
        conn.mask = mask
        self.conns[fd] = conn
        self.took(conn, got)
        if conn.fd in self.conns and conn.mask == 0:
            self.watch(conn, _EPOLLIN)
        self.settle(conn)

    def settle(self, conn: Connection) -> None:
        """After the worker handled an event of conn: whether the compiled poll may read
        it from now on (a connection between requests, watched for input alone, no reply
        queued, not closing), or must hand its events to the worker."""
        if self.fast_poll is None or self.conns.get(conn.fd) is not conn:
            return
        if (conn.mask == _EPOLLIN and not self.stopping and not (
                conn.in_message or conn.closing or conn.linger_until or conn.out
                or conn.requests or conn.broken)):
            self.fast.add(conn.fd)
        else:
            self.fast.discard(conn.fd)

    def first_read(self, fd: int) -> None:
        """The first bytes of a waiting connection (see self.waiting).  A Connection:
        close exchange the compiled path serves whole is closed here, without the
        connection becoming a Python object, as accept() does when the request came
        with the connection; anything else becomes a Connection."""
        try:
            got = self.fast_serve(fd, self.fast_ctx)  # type: ignore[misc]
        except Exception as exc:
            got = exc
        if got is None:
            return  # woken for nothing
        del self.waiting[fd]
        if got is False or type(got) is bytes and not got:
            os.close(fd)  # served and not kept, or end of file (it leaves the epoll set)
            self.accept_again()
        else:
            self.adopt(fd, got, _EPOLLIN)

    def first_took(self, fd: int, got: Any) -> None:
        """What the compiled poll did with a waiting connection's first read: False, it
        closed the exchange it served (and returns it only while the cap holds the
        listener back); anything else, as first_read takes it."""
        if got is False:
            self.accept_again()
        else:
            self.adopt(fd, got, _EPOLLIN)

    def open_count(self) -> int:
        return len(self.conns) + len(self.waiting)

    def close_waiting(self, fd: int) -> None:
        del self.waiting[fd]
        os.close(fd)
        self.accept_again()

    def took(self, conn: Connection, got: Any) -> None:
        """What the compiled path did with one read of conn (see fastpath.Serve)."""
        if got is None:
            return  # nothing to read
        conn.last = self.now
        if got is True or got is False:  # served, the reply sent whole
            if not got:
                conn.closing = True
            self.after_send(conn)
        elif type(got) is tuple:  # served, part of the reply still to send
            keep_alive, conn.out = got
            if not keep_alive:
                conn.closing = True
            self.after_send(conn)
        elif isinstance(got, BaseException):  # a callback raised (accept's list)
            log.error("HTTP request failed", exc_info=got)
            conn.closing = True
            self.send(conn, _SERVER_ERROR)
        elif not got:
            self.close(conn)
        else:
            self.feed(conn, got)  # not the common request: the Python path

    def read(self, conn: Connection) -> None:
        if self.fast_serve is not None and not (
                conn.in_message or conn.closing or conn.linger_until):
            # between requests: the compiled path reads, and serves what it can
            try:
                got = self.fast_serve(conn.fd, self.fast_ctx)
            except Exception as exc:
                got = exc
            self.took(conn, got)
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        conn.last = self.now
        if conn.linger_until:
            return  # after an error reply: input is read only to be dropped
        self.feed(conn, data)

    def feed(self, conn: Connection, data: bytes) -> None:
        """Parse what was read and answer the requests it completes (the Python path)."""
        conn.completed = False
        try:
            conn.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Stop):
                conn.closing = True  # an early refusal is queued
            elif isinstance(exc.__context__, _HeadTooLarge):
                conn.broken = conn.head_too_large = True
            else:
                conn.broken = True  # e.g. a target parse_url rejects: nothing was queued
        except httptools.HttpParserUpgrade:
            conn.closing = True  # no protocol switch here: answer, then close
        except httptools.HttpParserInvalidMethodError:
            # a well-formed request line with a method the parser does not know is
            # OpenSIPS's 406; anything else that fails there stays a plain 400
            conn.broken = True
            conn.bad_method = _REQUEST_LINE.search(data) is not None
        except httptools.HttpParserError:
            conn.broken = True
        if conn.in_head and not conn.broken:
            # A field still in progress is buffered by the parser, unseen by on_header:
            # count the bytes of the reads that hold only this head (one that also ended an
            # earlier pipelined request is not counted: at most RECV_SIZE more is held).
            if not conn.completed:
                conn.head_raw += len(data)
            if conn.head_raw > MAX_HEAD:
                conn.broken = conn.head_too_large = True
        if conn.requests or conn.broken:
            self.send(conn, self.replies(conn))

    def send(self, conn: Connection, data: bytes) -> None:
        if conn.out:
            conn.out += data
        else:
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close(conn)
                return
            conn.out = data[sent:] if sent < len(data) else b""
        self.after_send(conn)

    def write(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        conn.out = conn.out[sent:]
        conn.last = self.now
        self.after_send(conn)

    def after_send(self, conn: Connection) -> None:
        if conn.out:
            # Stop reading while a reply is pending: a client that pipelines without
            # reading its replies cannot make us buffer without bound.
            self.watch(conn, _EPOLLOUT)
        elif conn.closing:
            if conn.broken or conn.in_message:
                self.linger(conn)  # unread input: a plain close could reset the reply away
            else:
                self.close(conn)
        elif self.stopping and conn.idle():
            self.close(conn)
        elif conn.mask:
            self.watch(conn, _EPOLLIN)

    def linger(self, conn: Connection) -> None:
        """Half-close after the final reply and drop further input for a short while."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.linger_until = self.now + LINGER_TIMEOUT
        conn.closing = conn.broken = conn.in_message = False
        self.watch(conn, _EPOLLIN)

    def watch(self, conn: Connection, mask: int) -> None:
        if conn.mask == mask:
            return
        if conn.mask:
            self.ep.modify(conn.fd, mask)
        else:
            self.ep.register(conn.fd, mask)
        conn.mask = mask

    def close(self, conn: Connection) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        self.fast.discard(conn.fd)
        if conn.mask:
            self.ep.unregister(conn.fd)
        conn.sock.close()
        self.accept_again()

    def accept_again(self) -> None:
        """After a close: take new connections again if the cap had stopped that."""
        if not self.accepting and not self.stopping and self.open_count() < self.max_connections:
            self.resume_accepting()

    def pause_accepting(self) -> None:
        if self.accepting:
            self.ep.unregister(self.listener.fileno())
            self.accepting = False

    def resume_accepting(self) -> None:
        # EPOLLEXCLUSIVE: one worker is woken per new connection, not all of them.
        self.ep.register(self.listener.fileno(), _EPOLLIN | select.EPOLLEXCLUSIVE)
        self.accepting = True

    # -- the loop -----------------------------------------------------------------------
    def sweep(self) -> None:
        """Close connections idle too long, stuck half-way, or done lingering."""
        now = self.now
        for fd in self.seen:  # answered by the compiled poll since the last sweep
            conn = self.conns.get(fd)
            if conn is not None:
                conn.last = now
        self.seen.clear()
        for conn in list(self.conns.values()):
            if conn.linger_until:
                if now > conn.linger_until:
                    self.close(conn)
            elif conn.in_message and now - conn.message_started > self.request_timeout:
                self.close(conn)  # the request did not arrive whole in time
            elif conn.in_message or conn.out:
                if now - conn.last > self.request_timeout:
                    self.close(conn)  # stopped moving half-way
            elif now - conn.last > self.idle_timeout or self.stopping:
                self.close(conn)
        for fd, since in list(self.waiting.items()):
            if now - since > self.idle_timeout or self.stopping:
                self.close_waiting(fd)  # as an idle Connection would be

    def begin_stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their reply."""
        self.stopping = True
        self.pause_accepting()  # for good: close() resumes only while not stopping
        self.fast.clear()  # every event to the loop now (the compiled poll stops too)
        for conn in list(self.conns.values()):
            conn.closing = True
            if conn.idle() and not conn.linger_until:
                self.close(conn)
        for fd in list(self.waiting):
            self.close_waiting(fd)

    def on_signal(self, signum: int, frame: Any) -> None:
        self.stop_requested = True
        self.stop_flag[0] = 1

    def poll_once(self, timeout: float) -> None:
        """Wait for events up to `timeout` seconds, and handle them.  With the compiled
        path, its poll waits and answers the requests of the connections in self.fast
        itself, returning only what needs the worker (see fastpath.Poll)."""
        if self.fast_poll is not None:
            events = self.fast_poll(self.ep.fileno(), self.fast_ctx, self.fast, self.seen,
                                    timeout, POLL_EVENTS, self.listen_fd,
                                    self.max_connections - self.open_count(), self.waiting)
        else:
            events = self.ep.poll(timeout, POLL_EVENTS)
        self.now = time.monotonic()
        conns = self.conns
        for event in events:
            fd = event[0]
            if len(event) == 3 and fd == self.listen_fd:  # accepted by the compiled poll
                self.took_accepted(event[2])
            elif len(event) == 3:  # read by the compiled poll: what it did with the read
                conn = conns.get(fd)
                if conn is not None:
                    self.took(conn, event[2])
                    self.settle(conn)
                else:  # a waiting descriptor's first read (it has left self.waiting)
                    self.first_took(fd, event[2])
            elif fd == self.listen_fd:
                self.accept()  # returns at once when not accepting (stopping)
            elif self.wake_r is not None and fd == self.wake_r.fileno():
                try:
                    self.wake_r.recv(64)
                except BlockingIOError:
                    pass
            else:
                conn = conns.get(fd)
                if conn is None:
                    if fd in self.waiting:
                        self.first_read(fd)
                    continue
                ev = event[1]
                if ev & _EPOLLOUT:
                    self.write(conn)
                elif ev & (_EPOLLIN | _EPOLLERR):
                    self.read(conn)
                self.settle(conn)

    def serve(self) -> None:
        conns, waiting = self.conns, self.waiting
        ep = self.ep
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self.resume_accepting()
        ep.register(wake_r.fileno(), _EPOLLIN)
        # The wake-up fd makes epoll return at once when a signal arrives.
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {s: signal.signal(s, self.on_signal) for s in STOP_SIGNALS}
        # A parent may fork us with these blocked (prefork.fork_workers does) so that a
        # signal sent before this point waits for the handlers instead of killing us.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.wake_r = wake_r
        next_sweep = time.monotonic() + SWEEP_EVERY
        deadline = 0.0
        try:
            while True:
                if self.stop_requested and not self.stopping:
                    self.begin_stop()
                    deadline = time.monotonic() + DRAIN_TIMEOUT
                if self.stopping and (not conns or time.monotonic() > deadline):
                    break
                self.poll_once(max(0.0, next_sweep - time.monotonic()))
                now = self.now
                if now >= next_sweep:
                    next_sweep = now + SWEEP_EVERY
                    self.sweep()
        finally:
            for conn in list(conns.values()):
                self.close(conn)
            for fd in list(waiting):
                self.close_waiting(fd)
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            ep.close()
            self.wake_r = None
            wake_r.close()
            wake_w.close()


def run_worker(sock: socket.socket, handle: Handle, cfg: HttpSettings, *,
               idle_timeout: float = IDLE_TIMEOUT,
               request_timeout: float = REQUEST_TIMEOUT,
               max_connections: int = MAX_CONNECTIONS, web: Any = None,
               monitor: Any = None, checked: Checked | None = None,
               commands: Any = None) -> None:
    """Serve MI requests on the shared listening socket until SIGTERM/SIGINT (and the web
    page, `web`, and the monitoring pages, `monitor`: see app.make_wsgi_app).

    On the signal: stop accepting, answer the requests already in progress (with
    `Connection: close`), close idle keep-alive connections, and return.

    `checked`: the MI core's checked stage (MICore.run_checked, which `handle` must be the
    same core's handle for), for the compiled fast path; None serves everything in Python.
    `commands`: that core's compiled commands (mi_server.mi.compiled.load), which the fast
    path asks first; None: every request it serves goes to `checked`.
    """
    Worker(sock, make_wsgi_app(handle, cfg, web, monitor), cfg, idle_timeout, request_timeout,
           max_connections, checked=checked, commands=commands).serve()
