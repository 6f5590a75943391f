"""The datagram listener's optional compiled fast path (mi_server/datagram/_fastpath.c), if
built.

It answers the common request (one JSON-RPC request of the narrow shape in a datagram
within the buffer) without running Python for the receive, the decoding or the send, and
hands every other datagram to the Python path (server.py and protocol.py), which defines
the behaviour (see the C file's header).  Installing from source builds it where a C
compiler is present; without one the listener serves everything the Python way, the same
bytes, just slower.  `MQMI_DATAGRAM_FASTPATH=0` in the environment turns it off (to compare
the two, or to rule it out when chasing a problem).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "MQMI_DATAGRAM_FASTPATH"

try:
    from mi_server.datagram._fastpath import serve as _serve
except ImportError:  # not built: no compiler at install time
    _serve = None

# serve(read_fd, send_fd, size, (stage, outcome, drop, settle_failed), stop) -> None (a
# signal, or the stop flag set), (data, address) for the Python path, or the exception a
# callback raised on one request; OSError when recvfrom fails otherwise
Serve = Callable[[int, int, int, tuple, bytearray], Any]


def built() -> bool:
    """The extension module is there (whether or not it is turned off)."""
    return _serve is not None


def load() -> Serve | None:
    """`serve`, unless it was not built or the environment turns it off."""
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    return _serve
