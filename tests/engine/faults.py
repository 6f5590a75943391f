"""Fault injection for crash tests: a stand-in for the arena's word view that counts
metadata word writes and kills the process (os._exit, no cleanup) at the N-th one.

Payload bytes go through the mmap, not the word view, so every write counted here is a
metadata word (undo log entries, the log count, links, counters, allocator words).  The
compiled pop (mi_server/engine/shm/_speedups.c) writes the mapping itself, not through the
view, so while a stand-in is in place the arena runs the Python pop, whose writes it sees;
the compiled one has its own counter (its _count_stores, used by test_crash.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class DieAtWrite:
    """Wraps a memoryview.cast('Q'); `die_at` <= 0 never dies (just counts)."""

    EXIT_CODE = 77

    def __init__(self, words: memoryview, die_at: int = 0) -> None:
        self._words = words
        self._die_at = die_at
        self.writes = 0

    def __getitem__(self, index: int) -> int:
        return self._words[index]

    def __setitem__(self, index: int, value: int) -> None:
        self._words[index] = value
        self.writes += 1
        if self.writes == self._die_at:
            os._exit(self.EXIT_CODE)


def _use_python_pop(arena: Any) -> Any:
    """Set the arena's compiled pop aside (its instance attribute, see Arena.__init__), so
    the class's Python one runs; the compiled one, or None, to put back."""
    return vars(arena).pop("_pop_plain", None)


@contextmanager
def counting_writes(arena: Any) -> Iterator[DieAtWrite]:
    """The arena's metadata writes counted while the block runs (never dies); the real
    word view and pop are put back even when the block raises."""
    counter = DieAtWrite(arena._w)
    compiled = _use_python_pop(arena)
    arena._w = counter
    try:
        yield counter
    finally:
        arena._w = counter._words
        if compiled is not None:
            arena._pop_plain = compiled


def die_in_child(arena: Any, op: Callable[[Any], object], at: int) -> int:
    """Run op(arena) in a forked child that dies at its `at`-th metadata write; the
    child's exit code (DieAtWrite.EXIT_CODE when it died, 0 when op wrote less)."""
    pid = os.fork()
    if pid == 0:
        _use_python_pop(arena)
        arena._w = DieAtWrite(arena._w, at)
        try:
            op(arena)
        finally:
            os._exit(0)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
