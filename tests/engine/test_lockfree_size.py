"""size() and sizes() read without the lock (x86): they must only ever see committed states.

A producer process keeps adding to a bounded queue, so every add that overflows first
raises `added` and only then `dropped_size`: a reader that took the four counters from the
middle of that add would see limit + 1.  A second queue is filled and drained by the same
producer; its size must never go negative or above what was put in."""

from __future__ import annotations

import os
import signal
from array import array

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm import arena as arena_module

from .faults import DieAtWrite, die_in_child

LIMIT = 3
READS = 100_000


def _hammer(arena) -> None:
    i = 0
    while True:
        i += 1
        arena.add("bounded", f"k{i}", "v")
        arena.add("flow", "k", "v")
        arena.fetch("flow")


@pytest.mark.timeout(120)
@pytest.mark.skipif(not arena_module._LOCK_FREE_READS, reason="locked reads on this CPU")
def test_size_and_sizes_never_see_a_half_done_operation(make_arena):
    arena = make_arena([QueueSpec("bounded", size=LIMIT), QueueSpec("flow")])
    pid = os.fork()
    if pid == 0:  # the writer: killed by the test, never returns
        try:
            _hammer(arena)
        finally:
            os._exit(1)
    try:
        seen_bounded: set[int] = set()
        seen_flow: set[int] = set()
        added_before = arena.stats()["bounded"].added
        for _ in range(READS):
            seen_bounded.add(arena.size("bounded"))
            seen_flow.add(arena.size("flow"))
            sizes = dict(arena.sizes())
            seen_bounded.add(sizes["bounded"])
            seen_flow.add(sizes["flow"])
        added_after = arena.stats()["bounded"].added
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert max(seen_bounded) <= LIMIT, seen_bounded
    assert seen_flow <= {0, 1}, seen_flow
    assert added_after - added_before > 1000  # the reads did overlap the writer's adds


class ReadHook:
    """The arena's word view, running `after_first_slice` once the reader has read its
    first range of words and `after_log_count` once it has read the undo log count: the
    exact moments another process acts in the interleaving below."""

    def __init__(self, words, after_first_slice, after_log_count) -> None:
        self._words = words
        self._hooks = {"slice": after_first_slice, 13: after_log_count}

    def __getitem__(self, index):
        value = self._words[index]
        if isinstance(index, slice):  # a memoryview slice is read later: copy it now
            value = array("Q", value)
        hook = self._hooks.pop("slice" if isinstance(index, slice) else index, None)
        if hook is not None:
            hook()
        return value

    def __setitem__(self, index, value) -> None:
        self._words[index] = value


@pytest.mark.skipif(not arena_module._LOCK_FREE_READS, reason="locked reads on this CPU")
def test_a_rollback_between_the_passes_is_not_taken_for_a_quiet_queue(make_arena):
    """A dead add raised `added` (its eviction not yet done); the reader's first pass sees
    that; the next locker rolls it back (log count 0: the reader reads that) and another
    add dies at the same point, so the second pass reads the same words again.  Counters
    alone cannot tell: only the rollback count shows the values were not there throughout.
    Without it size() answered limit + 1."""
    arena = make_arena([QueueSpec("bounded", size=LIMIT)])
    for i in range(LIMIT):
        arena.add("bounded", f"k{i}", "v")
    base = arena._queues["bounded"][0]

    def add(a) -> None:
        a.add("bounded", "new", "v")

    def died_after_raising_added(a) -> bool:  # added + 1 written, dropped_size not yet
        w = a._w
        return w[13] != 0 and w[base + 2] == LIMIT + 1 and w[base + 4] == 0

    for at in range(1, 40):  # the write of `added` in the add, found by trying
        probe = make_arena([QueueSpec("bounded", size=LIMIT)])
        for i in range(LIMIT):
            probe.add("bounded", f"k{i}", "v")
        if die_in_child(probe, add, at) == DieAtWrite.EXIT_CODE \
                and died_after_raising_added(probe):
            break
    else:
        pytest.fail("no write of the add leaves `added` raised before the eviction")

    assert die_in_child(arena, add, at) == DieAtWrite.EXIT_CODE
    other = Arena.attach(arena.name)  # another locker, with its own lock descriptor
    try:
        def die_again() -> None:
            assert die_in_child(other, add, at) == DieAtWrite.EXIT_CODE

        arena._w = ReadHook(arena._w, other.stats, die_again)  # stats(): lock, rollback
        got = arena.size("bounded")
        arena._w = arena._w._words
    finally:
        other.close()
    assert got == LIMIT
    arena.check_invariants()
    assert arena.size("bounded") == LIMIT
