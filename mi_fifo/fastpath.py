"""The listener's optional compiled fast path (mi_fifo/_fastpath.c), if it was built.

It answers the common request shape without running Python for framing, decoding or the
reply FIFO, and hands everything else to the pure-Python path, which defines the behaviour
(see the C file's header).  Installing from source builds it where a C compiler is present;
without one the listener serves everything the Python way, the same bytes, just slower.
`MQMI_FIFO_FASTPATH=0` in the environment turns it off (to compare the two, or to rule it
out when chasing a problem).
"""

from __future__ import annotations

import os
from collections.abc import Callable

ENV = "MQMI_FIFO_FASTPATH"

try:
    from mi_fifo._fastpath import serve as _serve
except ImportError:  # not built: no compiler at install time
    _serve = None

# serve(read_fd, size, prefix, max_request, refuse, stage, finish, write_slow[, stop]) ->
# the bytes it did not serve, or (those bytes, exception) after a callback raised on one
# request; `stop` a bytearray whose first byte set means "stop after this request"
Serve = Callable[..., "bytes | tuple[bytes, Exception]"]


def built() -> bool:
    """The extension module is there (whether or not it is turned off)."""
    return _serve is not None


def load() -> Serve | None:
    """`serve`, unless it was not built or the environment turns it off."""
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    return _serve
