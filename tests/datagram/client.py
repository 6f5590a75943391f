"""A datagram MI client for the tests: UDP (IPv4, IPv6) or a bound AF_UNIX socket."""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

NO_REPLY = None


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now (never OpenSIPS's 8080)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Client:
    """One client socket; `call(bytes)` sends one datagram and returns the reply (None
    when nothing comes back within `timeout`)."""

    def __init__(self, address: str, reply_dir: Path | None = None) -> None:
        self.bound: str | None = None
        if address.startswith("udp:"):
            host, _, port = address[4:].rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.target: Any = (host, int(port))
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            directory = reply_dir or Path(address).parent
            self.bound = str(directory / f"c{os.getpid()}_{uuid.uuid4().hex[:8]}.sock")
            self.sock.bind(self.bound)
            self.target = address

    def call(self, body: bytes, timeout: float = 5.0) -> bytes | None:
        self.sock.settimeout(timeout)
        self.sock.sendto(body, self.target)
        try:
            return self.sock.recv(1 << 17)
        except TimeoutError:
            return NO_REPLY

    def mi(self, method: str, params: Any = None, timeout: float = 5.0) -> dict:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            body["params"] = params
        reply = self.call(json.dumps(body).encode(), timeout)
        assert reply is not None, f"no datagram reply to {method}"
        return json.loads(reply)

    def close(self) -> None:
        self.sock.close()
        if self.bound:
            Path(self.bound).unlink(missing_ok=True)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
