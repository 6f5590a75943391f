"""The engine's optional compiled part (mi_server/engine/shm/_speedups.c), if it was built.

It holds the arena lock as a robust process-shared mutex (lock.py) and the unkeyed fetch's
word writes (Arena._pop_plain_py's, exactly).  Installing from source builds it where a C
compiler is present; without one the engine locks with flock and pops in Python, with the
same results, just slower.  `MQMI_ENGINE_SPEEDUPS=0` in the environment turns it off for
what starts afterwards (an arena created then locks with flock; its processes pop in
Python), to compare the two or to rule it out when chasing a problem.  An arena created
with the mutex keeps it: every process that attaches it needs the compiled part.
"""

from __future__ import annotations

import os
from types import ModuleType

ENV = "MQMI_ENGINE_SPEEDUPS"

try:
    from mi_server.engine.shm import _speedups as _module
except ImportError:  # not built: no compiler at install time
    _module = None


def built() -> ModuleType | None:
    """The extension module, whether or not the environment turns it off."""
    return _module


def load() -> ModuleType | None:
    """The extension module, unless it was not built or the environment turns it off."""
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    return _module
