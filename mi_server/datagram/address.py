"""`datagram.socket` as OpenSIPS mi_datagram writes it: `udp:IP:PORT` or an absolute path.

Pure parsing, shared by the configuration (which reports a bad value) and the transport
(which binds what it describes)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

# sun_path holds 108 bytes with its NUL; bound through /proc/self/fd/N/ (see sockets.py)
UNIX_PATH_MAX = 107
# the largest UDP payload over IPv4 (65535 - 20 - 8): a reply must fit one datagram
UDP_PAYLOAD_MAX = 65507


class BadAddress(ValueError):
    """Not a datagram socket address; the message says what is expected."""


@dataclass(frozen=True)
class DatagramAddress:
    family: int  # AF_INET, AF_INET6 or AF_UNIX
    host: str = ""  # UDP: the IP literal
    port: int = 0
    path: str = ""  # AF_UNIX: the absolute path

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        return self.path if self.is_unix else (self.host, self.port)

    def __str__(self) -> str:
        if self.is_unix:
            return self.path
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"udp:{host}:{self.port}"


def parse_address(text: object) -> DatagramAddress:
    """`udp:127.0.0.1:8080`, `udp:[::1]:8080` (brackets optional) or `/run/mi.sock`."""
    if not isinstance(text, str) or not text:
        raise BadAddress(f"bad socket {text!r} (udp:IP:PORT, e.g. udp:127.0.0.1:8080, "
                         "or an absolute path for a unix socket)")
    if text.startswith("/"):
        if "\0" in text or len(text.encode()) > UNIX_PATH_MAX:
            raise BadAddress(f"bad unix socket path {text!r} (at most {UNIX_PATH_MAX} bytes)")
        if text.endswith("/"):
            raise BadAddress(f"bad unix socket path {text!r} (a file name, not a directory)")
        return DatagramAddress(socket.AF_UNIX, path=text)
    scheme, sep, rest = text.partition(":")
    host, _, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text) if port_text.isdigit() else -1
    if scheme.lower() != "udp" or not sep or not host or not 1 <= port <= 65535:
        raise BadAddress(f"bad socket {text!r} (udp:IP:PORT, e.g. udp:127.0.0.1:8080 or "
                         "udp:[::1]:8080, or an absolute path for a unix socket)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise BadAddress(f"bad socket {text!r}: {host!r} is not an IP address "
                         "(IPv4, or IPv6 in brackets)") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return DatagramAddress(family, host=str(ip), port=port)
