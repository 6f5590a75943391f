"""The arena lock: `flock` on an open file description that belongs to this process alone.

flock locks belong to the open file description, not the process: a forked child that kept
its parent's fd would share the parent's lock (both "hold" it at once). So every forked
child re-opens the arena file right after fork, through /proc/self/fd so that this works
even after the file was unlinked. The kernel drops the lock when its holder dies (kill -9
included), which is what makes the engine crash-safe without a lock-owner protocol.
"""

from __future__ import annotations

import fcntl
import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet = weakref.WeakSet()


def _reopen_all() -> None:
    for obj in list(_live):
        obj._after_fork_in_child()


os.register_at_fork(after_in_child=_reopen_all)


def track(obj: ForkAware) -> None:
    """Have `obj._after_fork_in_child()` called in every forked child while obj lives."""
    _live.add(obj)


def reopen(fd: int, path: str) -> int:
    """A new open file description for the same file as `fd` (then `fd` is closed)."""
    try:
        new = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        new = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    os.close(fd)
    return new


flock = fcntl.flock
assert (fcntl.LOCK_EX, fcntl.LOCK_UN) == (2, 8), "the hot paths pass these as literals"
