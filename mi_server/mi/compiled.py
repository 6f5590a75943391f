"""The MI's optional compiled commands (mi_server/mi/_compiled.c), if built.

`mq_get_size`, `mq_get_sizes` and `mq_fetch` of the common shapes, answered in C over the
shared-memory engine's words for a transport's compiled fast path (the HTTP worker's), so
that such a request runs no Python at all; every other request, and every case the C code
leaves alone (see its header), goes to the MI core as before, which defines what each
command answers.  Installing from source builds it where a C compiler is present.
`MQMI_MI_COMPILED=0` in the environment turns it off (to compare, or to rule it out).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mi_server.mi.jsonvalues import encode, to_bytes

if TYPE_CHECKING:
    from mi_server.mi.core import MICore

ENV = "MQMI_MI_COMPILED"

try:
    from mi_server.mi import _compiled
except ImportError:  # not built: no compiler at install time
    _compiled = None  # type: ignore[assignment]


def built() -> bool:
    """The extension module is there (whether or not it is turned off)."""
    return _compiled is not None


def load(core: MICore) -> Any:
    """The compiled commands over `core`'s engine in this process, as the capsule a fast
    path takes (mi_server/mi/compiled.h), or None: not built, turned off, an engine whose
    words cannot be read directly (Redis, a closed arena), or a registry whose commands are
    not mqueue.py's (then only the core knows what they answer).  Build it in the process
    that serves, after any fork."""
    if _compiled is None or os.environ.get(ENV, "1").strip() == "0":
        return None
    from mi_server.mi.commands import mqueue

    for name, handler in (("mq_get_size", mqueue.mq_get_size),
                          ("mq_get_sizes", mqueue.mq_get_sizes),
                          ("mq_fetch", mqueue.mq_fetch)):
        cmd = core.registry.lookup(name)
        if cmd is None or cmd.handler is not handler:
            return None
    native_view = getattr(core.ctx.engine, "native_view", None)
    view = native_view() if callable(native_view) else None
    if view is None:
        return None
    words, queues, mutex, lock_free = view
    if not queues:
        return None
    table = [(name, base, mode, b'{"name":%b,"size":' % to_bytes(
                  encode(name.decode("utf-8", "surrogatepass"))))
             for name, base, mode in queues]
    return _compiled.build(words, table, mutex, lock_free)


def answer(commands: Any, request: bytes) -> bytes | None:
    """What a fast path gets from `commands` for one request (tests and benchmarks): the
    reply bytes, or None when the request goes to the MI core."""
    assert _compiled is not None
    return _compiled.answer(commands, request)
