"""The arena lock, of one of two kinds chosen when the arena is created (layout.py
H_LOCK_KIND): both are released by the kernel when their holder dies (kill -9 included),
which is what makes the engine crash-safe without a lock-owner protocol.

LOCK_MUTEX, where the engine's compiled part is built (speedups.py): a robust
process-shared pthread mutex in the arena header (_speedups.c), taken and released
without a system call when nobody else holds it.  A dead holder's mutex goes to the next
locker, which rolls back what the holder left, as after a dead flock holder.

LOCK_FLOCK otherwise: `flock` on an open file description that belongs to this process
alone.  flock locks belong to the open file description, not the process: a forked child
that kept its parent's fd would share the parent's lock (both "hold" it at once).  So
every forked child re-opens the arena file right after fork, through /proc/self/fd so that
this works even after the file was unlinked.  Two system calls per locked operation:
~0.4 us warm, ~0.8 us in the FIFO listener serving mq_fetch (benchmarks/mi_fifo.py).
"""

from __future__ import annotations

import fcntl
import os
import weakref
from collections.abc import Callable
from functools import partial
from typing import Protocol

from . import speedups
from .layout import H_LOCK_ABI, H_MUTEX, LOCK_FLOCK, LOCK_MUTEX


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

Lock = tuple[Callable[[], None], Callable[[], None]]  # (acquire, release)


def new_lock_kind() -> int:
    """The kind a new arena gets: the mutex where the compiled part is on."""
    return LOCK_MUTEX if speedups.load() is not None else LOCK_FLOCK


def init_lock(kind: int, words: memoryview) -> None:
    """Set up a new arena's lock of `kind` in its (zeroed) header, before it is laid out."""
    if kind == LOCK_MUTEX:
        module = speedups.built()
        module.mutex_init(words, H_MUTEX)  # type: ignore[union-attr]
        words[H_LOCK_ABI] = module.MUTEX_ABI  # type: ignore[union-attr]


def lock_pair(kind: int, fd: int, words: memoryview, path: str) -> Lock:
    """(acquire, release) for an arena's lock: C calls, no Python frame, for the hot paths.
    flock's pair is bound to `fd`, so it is made again when the fd changes (after fork)."""
    if kind == LOCK_FLOCK:
        return partial(flock, fd, fcntl.LOCK_EX), partial(flock, fd, fcntl.LOCK_UN)
    if kind == LOCK_MUTEX:
        module = speedups.built()
        if module is None:
            raise ValueError(f"{path} is locked by the engine's compiled mutex, and this "
                             "install has no mi_server.engine.shm._speedups")
        if words[H_LOCK_ABI] != module.MUTEX_ABI:
            raise ValueError(f"{path} is locked by a mutex of another C library's layout "
                             f"({words[H_LOCK_ABI]:#x}, this process: {module.MUTEX_ABI:#x})")
        return partial(module.mutex_lock, words, H_MUTEX), partial(module.mutex_unlock,
                                                                   words, H_MUTEX)
    raise ValueError(f"{path} is not a ready mqueue arena: unknown lock kind {kind}")


def _closed() -> None:
    # ValueError, as flock(-1) raised when a closed arena's fd was -1
    raise ValueError("the arena is closed in this process")


CLOSED: Lock = (_closed, _closed)  # a closed arena's lock: every operation fails
