"""The three MI clients mq-check speaks, each bounded by one deadline: nothing here can
wait past it (the `opensips` package's clients have no timeout at all).

Each takes the request bytes and returns the reply bytes, or raises CheckFailed with a
one-line reason.
"""

from __future__ import annotations

import errno
import http.client
import os
import select
import socket
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit


class CheckFailed(Exception):
    """The server could not be asked or did not answer: the plugin's UNKNOWN."""


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise CheckFailed("timed out")
    return left


def http_call(url: str, body: bytes, deadline: float) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CheckFailed(f"bad URL {url!r}")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=_left(deadline))
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if parts.username is not None:
        import base64

        token = f"{parts.username}:{parts.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    try:
        conn.request("POST", parts.path or "/", body, headers)
        conn.sock.settimeout(_left(deadline))
        resp = conn.getresponse()
        data = resp.read()
    except TimeoutError:
        raise CheckFailed(f"no answer from {parts.hostname}:{parts.port} in time") from None
    except (OSError, http.client.HTTPException) as exc:
        raise CheckFailed(f"cannot ask {url}: {_why(exc)}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise CheckFailed(f"HTTP {resp.status} from {url}")
    return data


def fifo_call(fifo: str, reply_dir: str, body: bytes, deadline: float) -> bytes:
    """As opensips-cli does: a reply FIFO in reply_dir, `:name:` + JSON into the server's
    FIFO, one reply line back, all within the deadline."""
    name = f"mq_check_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    reply = Path(reply_dir) / name
    try:
        os.mkfifo(reply, 0o600)
    except OSError as exc:
        raise CheckFailed(f"cannot create the reply FIFO {reply}: {_why(exc)}") from None
    try:
        rfd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
        try:
            _write_request(fifo, b":" + name.encode() + b":" + body, deadline)
            return _read_reply(rfd, deadline)
        finally:
            os.close(rfd)
    finally:
        reply.unlink(missing_ok=True)


def _write_request(fifo: str, data: bytes, deadline: float) -> None:
    while True:  # no reader: ENXIO at once; retried briefly, as the server may be restarting
        try:
            wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise CheckFailed(f"cannot open the FIFO {fifo}: {_why(exc)}") from None
            if deadline - time.monotonic() < 0.1:
                raise CheckFailed(f"nobody reads the FIFO {fifo}") from None
            time.sleep(0.05)
    try:
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [wfd], [], _left(deadline))
            if not ready:
                raise CheckFailed("timed out writing to the FIFO")
            try:
                view = view[os.write(wfd, view):]
            except BlockingIOError:
                continue
    finally:
        os.close(wfd)


def _read_reply(rfd: int, deadline: float) -> bytes:
    """Bytes until the server closes its end (it writes one reply, then closes)."""
    chunks: list[bytes] = []
    writer_seen = False
    while True:
        ready, _, _ = select.select([rfd], [], [], min(_left(deadline), 0.05))
        if not ready:
            continue
        chunk = os.read(rfd, 65536)
        if chunk:
            chunks.append(chunk)
            writer_seen = True
        elif writer_seen:
            return b"".join(chunks)
        else:  # no writer has opened it yet: poll instead of spinning on EOF
            time.sleep(0.01)


def datagram_call(address: str, body: bytes, deadline: float, buffer: int = 65535) -> bytes:
    """udp:IP:PORT ([v6] too) or an AF_UNIX datagram socket path: one datagram each way."""
    if address.startswith("udp:"):
        host, _, port = address[4:].rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise CheckFailed(f"bad datagram address {address!r} (udp:IP:PORT or /path)")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        target: object = (host, int(port))
        bound = None
    elif address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = os.path.join(tempfile.gettempdir(), f"mq_check_{os.getpid()}_"
                                                    f"{uuid.uuid4().hex[:8]}.sock")
        sock.bind(bound)  # the server replies to the sender's address
        target = address
    else:
        raise CheckFailed(f"bad datagram address {address!r} (udp:IP:PORT or /path)")
    try:
        sock.settimeout(_left(deadline))
        sock.sendto(body, target)
        sock.settimeout(_left(deadline))
        return sock.recv(buffer)
    except TimeoutError:
        raise CheckFailed(f"no answer from {address} in time") from None
    except OSError as exc:
        raise CheckFailed(f"cannot ask {address}: {_why(exc)}") from None
    finally:
        sock.close()
        if bound:
            Path(bound).unlink(missing_ok=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
