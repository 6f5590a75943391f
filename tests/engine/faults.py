"""Fault injection for crash tests: a stand-in for the arena's word view that counts
metadata word writes and kills the process (os._exit, no cleanup) at the N-th one.

Payload bytes go through the mmap, not the word view, so every write counted here is a
metadata word (undo log entries, the log count, links, counters, allocator words).
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


@contextmanager
def counting_writes(arena: Any) -> Iterator[DieAtWrite]:
    """The arena's metadata writes counted while the block runs (never dies); the real
    word view is put back even when the block raises."""
    counter = DieAtWrite(arena._w)
    arena._w = counter
    try:
        yield counter
    finally:
        arena._w = counter._words


def die_in_child(arena: Any, op: Callable[[Any], object], at: int) -> int:
    """Run op(arena) in a forked child that dies at its `at`-th metadata write; the
    child's exit code (DieAtWrite.EXIT_CODE when it died, 0 when op wrote less)."""
    pid = os.fork()
    if pid == 0:
        arena._w = DieAtWrite(arena._w, at)
        try:
            op(arena)
        finally:
            os._exit(0)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
