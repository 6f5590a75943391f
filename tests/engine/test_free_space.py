"""Free space: compaction (compact.py) lets an arena emptied of small items take bigger
ones, changes no queue, is finished by the next locker when its process dies at any of its
writes, and is skipped when nothing was freed; a block cut from a bigger free one leaves
the rest free (alloc's split)."""

from __future__ import annotations

import pytest

from mi_server.engine import Arena, ArenaFull, QueueSpec

from .conftest import MakeArena
from .faults import DieAtWrite, counting_writes, die_in_child

SMALL = "s" * 20  # an 80-byte block
MEDIUM = "M" * 300  # fits in 7 merged small blocks, in no single one
BIG = "B" * 3000
SIZE = 64 << 10


def fill(arena: Arena, key: str = "fill") -> int:
    """Add small items to `plain` until the arena is full; how many went in."""
    n = 0
    try:
        while True:
            arena.add("plain", f"{key}{n}", SMALL)
            n += 1
    except ArenaFull:
        return n


def fragmented(make_arena: MakeArena) -> tuple[Arena, int]:
    """An arena filled with small items in `plain`, then all fetched but every 8th, which
    is added back at once and so takes the block it just left (free lists are LIFO): the
    free space is in runs of 7 blocks between live items.  Plus a keyed queue's item."""
    arena = make_arena([QueueSpec("plain"), QueueSpec("keyed", addmode=2)], SIZE)
    arena.add("keyed", "k", "v")
    n = fill(arena)
    for i in range(n):
        item = arena.fetch("plain")
        if i % 8 == 0:
            arena.add("plain", *item)
    return arena, n


def pinned_big_block(make_arena: MakeArena) -> Arena:
    """A full arena whose only free block is a big item's (fetched): the small items that
    follow must be cut from it.  Too little has been freed for a compaction pass."""
    arena = make_arena([QueueSpec("plain")], SIZE)
    arena.add("plain", "big", BIG)
    fill(arena)
    assert arena.fetch("plain") == ("big", BIG)
    return arena


def contents(arena: Arena) -> dict[str, list[tuple[str, str]]]:
    return {q.name: arena.snapshot(q.name) for q in arena.specs()}


def add_medium(arena: Arena) -> None:
    arena.add("plain", "medium", MEDIUM)


def add_small(arena: Arena) -> None:
    arena.add("plain", "cut", SMALL)


def writes_and_result(arena: Arena, op) -> tuple[int, dict]:
    """The metadata writes `op` makes on this arena, and the contents it leaves."""
    with counting_writes(arena) as counter:
        op(arena)
    return counter.writes, contents(arena)


def test_free_runs_between_live_items_take_a_bigger_item(make_arena):
    arena, n = fragmented(make_arena)
    assert n > 200
    before = contents(arena)
    assert len(before["plain"]) == (n + 7) // 8
    add_medium(arena)
    arena.check_invariants()
    assert contents(arena) == {"plain": [*before["plain"], ("medium", MEDIUM)],
                               "keyed": before["keyed"]}
    with pytest.raises(ArenaFull):  # no run of 7 small blocks holds this one
        arena.add("plain", "big", BIG)
    assert arena.fetch_many("plain", 10_000)[-1] == ("medium", MEDIUM)
    arena.check_invariants()


def test_free_space_at_the_end_goes_back_to_the_bump_pointer(make_arena):
    arena, _ = fragmented(make_arena)
    arena.fetch_many("plain", 10_000)  # only the keyed item (the first block) is left
    arena.add("plain", "big", BIG)
    arena.check_invariants()
    # everything after the keyed item's block is free again: one bump-allocated big block
    assert arena.used_bytes() < 8 * 1024


def test_an_arena_full_of_live_items_fails_without_a_pass(make_arena):
    arena, _ = fragmented(make_arena)
    add_medium(arena)  # the pass after the fetches
    fill(arena, "more")
    with counting_writes(arena) as counter, pytest.raises(ArenaFull):
        arena.add("plain", "big", BIG)
    assert counter.writes == 0  # nothing freed since the last pass: no new pass
    arena.check_invariants()


@pytest.mark.timeout(120)
def test_death_at_any_write_of_a_pass_is_finished_by_the_next_locker(make_arena):
    writes, after = writes_and_result(fragmented(make_arena)[0], add_medium)
    assert writes > 100  # the pass rewrites every free-list head
    step = max(1, writes // 150)  # ~150 death points, first and last included
    for at in sorted({*range(1, writes + 1, step), writes}):
        arena, _ = fragmented(make_arena)
        before = contents(arena)
        assert die_in_child(arena, add_medium, at) == DieAtWrite.EXIT_CODE
        arena.check_invariants()  # takes the lock: finishes the pass or rolls back
        got = contents(arena)
        assert got in (before, after), f"death at write {at}/{writes}"
        if got == before:
            add_medium(arena)  # and the arena can still take it
            arena.check_invariants()
            assert contents(arena) == after


def test_small_items_are_cut_from_a_bigger_free_block(make_arena):
    arena = pinned_big_block(make_arena)
    n = fill(arena, "s")
    arena.check_invariants()
    assert n >= 3000 // 80 - 1  # the whole big block, not one item per block


@pytest.mark.timeout(60)
def test_death_at_any_write_of_a_split_leaves_before_or_after(make_arena):
    writes, after = writes_and_result(pinned_big_block(make_arena), add_small)
    assert writes > 4
    for at in range(1, writes + 1):
        arena = pinned_big_block(make_arena)
        before = contents(arena)
        assert die_in_child(arena, add_small, at) == DieAtWrite.EXIT_CODE
        arena.check_invariants()
        assert contents(arena) in (before, after), f"death at write {at}/{writes}"
        arena.add("plain", "cut2", SMALL)  # and the rest of the block is still usable
        arena.check_invariants()


def test_refused_addmode1_duplicates_do_not_count_as_freed_space(make_arena):
    """An addmode-1 duplicate is counted as dropped by addmode but never had a block: a
    stream of them must not make every failing add run a pass that frees nothing."""
    arena = make_arena([QueueSpec("plain"), QueueSpec("oldest", addmode=1)], SIZE)
    arena.add("oldest", "k", "v")
    queued = 1 + fill(arena)
    for _ in range(queued // 16 + 2):
        arena.add("oldest", "k", "again")  # refused: the oldest is kept
    with counting_writes(arena) as counter, pytest.raises(ArenaFull):
        arena.add("plain", "big", BIG)
    assert counter.writes == 0
