"""The HTTP worker's optional compiled fast path (mi_server/http/_fastpath.c), if built.

It answers the common MI request (`POST <root>`, HTTP/1.1, a Content-Length body of the
narrow JSON-RPC shape, in one read) without running Python for the HTTP parse, the WSGI
app or the reply head, and hands everything else to the Python path (server.py and
app.py), which defines the behaviour (see the C file's header).  Installing from source
builds it where a C compiler is present; without one the worker serves everything the
Python way, the same bytes, just slower.  `MQMI_HTTP_FASTPATH=0` in the environment
turns it off (to compare the two, or to rule it out when chasing a problem).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "MQMI_HTTP_FASTPATH"

try:
    from mi_server.http._fastpath import accept as _accept
    from mi_server.http._fastpath import poll as _poll
    from mi_server.http._fastpath import serve as _serve
except ImportError:  # not built: no compiler at install time
    _serve = _accept = _poll = None

# serve(fd, ctx) -> None | bytes | bool | (bool, bytes); accept(listen_fd, ctx, room) ->
# [(fd, serve's result or an exception)]; ctx: (root, limit, max_head, checked, guard,
# hosts, stop, commands), see server.Worker; poll(epoll_fd, ctx, fast, seen, timeout, maxevents,
# listen_fd, room[, waiting]) -> [(fd, events) | (fd, events, serve's result or an
# exception) | (listen_fd, events, accept's list)]
Serve = Callable[[int, tuple], Any]
Accept = Callable[[int, tuple, int], list]
Poll = Callable[..., list]


def built() -> bool:
    """The extension module is there (whether or not it is turned off)."""
    return _serve is not None


def load() -> tuple[Serve, Accept, Poll] | None:
    """(serve, accept, poll), unless it was not built or the environment turns it off."""
    if os.environ.get(ENV, "1").strip() == "0" or _serve is None or _accept is None \
            or _poll is None:
        return None
    return _serve, _accept, _poll
