"""The HTTP listening socket, created once before the workers are forked."""

from __future__ import annotations

import errno
import socket

from .app import HttpSettings

BACKLOG = 1024


class BindError(OSError):
    """The configured address cannot be listened on; the message says which and why."""


def bind(cfg: HttpSettings) -> socket.socket:
    """A non-blocking listening TCP socket on cfg.host:cfg.port, shared by forked workers."""
    infos = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: a restart must not wait for the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = f"{cfg.host}:{cfg.port}"
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is already in use"
            raise BindError(exc.errno, f"http: cannot listen on {where}: {reason}") from None
        raise BindError(exc.errno, f"http: cannot listen on {where}: {exc.strerror}") from None
    # Workers accept from one shared socket: non-blocking so a worker that loses the
    # race for a connection goes back to its loop instead of hanging in accept().
    sock.setblocking(False)
    return sock
