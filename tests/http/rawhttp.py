"""Tiny raw-socket HTTP/1.1 helpers: exact bytes out, parsed replies back."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    # No Host line: the server serves a request without one (as from HTTP/1.0 clients),
    # and a made-up one is refused (mi_server.http.guard); *extra may add one.
    head = [f"POST {path} HTTP/{version}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_reply(sock: socket.socket, buf: bytearray) -> Reply:
    """One reply from sock; leftover bytes stay in buf for the next call."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full reply head: {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return Reply(status, headers, body)


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the server has closed (EOF or reset) within the socket's timeout."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
