"""size() and sizes() read without the lock (x86): they must only ever see committed states.

A producer process keeps adding to a bounded queue, so every add that overflows first
raises `added` and only then `dropped_size`: a reader that took the four counters from the
middle of that add would see limit + 1.  A second queue is filled and drained by the same
producer; its size must never go negative or above what was put in."""

from __future__ import annotations

import os
import signal

import pytest

from mi_server.engine import QueueSpec
from mi_server.engine import arena as arena_module

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
        for _ in range(READS):
            seen_bounded.add(arena.size("bounded"))
            seen_flow.add(arena.size("flow"))
            sizes = dict(arena.sizes())
            seen_bounded.add(sizes["bounded"])
            seen_flow.add(sizes["flow"])
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert max(seen_bounded) <= LIMIT, seen_bounded
    assert seen_flow <= {0, 1}, seen_flow
    assert LIMIT in seen_bounded  # the reads did overlap the writer's adds
