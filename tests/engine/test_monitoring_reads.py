"""What the engine tells monitoring: when each queue's oldest item was added (a word per
item written at add) and the allocator's figures behind the shmem: statistics."""

from __future__ import annotations

import time

import pytest

from mi_server.engine import ArenaFull, QueueSpec
from mi_server.engine.shm.alloc import block_words
from mi_server.engine.shm.layout import ITEM_HEADER_BYTES


def test_oldest_added_is_the_head_items_add_time(make_arena):
    arena = make_arena([QueueSpec("plain"), QueueSpec("keyed", addmode=2)])
    assert arena.stats()["plain"].oldest_added_ns == 0  # empty: no oldest item
    before = time.time_ns()
    arena.add("plain", "a", "1")
    arena.add("keyed", "a", "1")
    after_first = time.time_ns()
    time.sleep(0.01)
    arena.add("plain", "b", "2")
    arena.add("keyed", "b", "2")
    second = time.time_ns()
    stats = arena.stats()
    for q in ("plain", "keyed"):
        assert before <= stats[q].oldest_added_ns <= after_first
    arena.fetch("plain")
    arena.fetch_many("keyed", 1)
    stats = arena.stats()
    for q in ("plain", "keyed"):  # the head is now the second item
        assert after_first < stats[q].oldest_added_ns <= second
    arena.fetch("plain")
    assert arena.stats()["plain"].oldest_added_ns == 0


def test_addmode2_replace_makes_the_new_item_the_youngest(make_arena):
    arena = make_arena([QueueSpec("k", addmode=2)])
    arena.add("k", "a", "1")
    t_a = arena.stats()["k"].oldest_added_ns
    time.sleep(0.01)
    arena.add("k", "b", "1")
    arena.add("k", "a", "2")  # the new a goes to the tail: b is now the oldest
    assert arena.snapshot("k") == [("b", "1"), ("a", "2")]
    assert arena.stats()["k"].oldest_added_ns > t_a


def _live_block_payload(arena) -> int:
    return sum(block_words(len(k.encode()), len(v.encode())) * 8 - ITEM_HEADER_BYTES
               for q in arena.specs() for k, v in arena.snapshot(q.name))


def test_memory_figures_follow_the_allocator(make_arena):
    size = 256 << 10
    arena = make_arena([QueueSpec("q"), QueueSpec("k", addmode=1)], size=size)
    empty = arena.memory()
    assert empty.total_size == size
    assert empty.used_size == 0 and empty.fragments == 0
    assert empty.real_used_size == empty.max_used_size == size - empty.free_size
    layout_bytes = empty.real_used_size
    assert 0 < layout_bytes < size // 2

    for i in range(100):
        arena.add("q", f"key{i}", "v" * (i % 40))
        arena.add("k", f"key{i % 7}", "x")
    m = arena.memory()
    assert m.used_size == _live_block_payload(arena)
    items = arena.size("q") + arena.size("k")
    assert m.real_used_size == layout_bytes + m.used_size + items * ITEM_HEADER_BYTES
    assert m.free_size == size - m.real_used_size
    assert m.max_used_size == m.real_used_size and m.fragments == 0

    for _ in range(60):
        arena.fetch("q")
    drained = arena.memory()
    assert drained.fragments == 60  # each freed block is on a free list
    assert drained.used_size == _live_block_payload(arena)
    assert drained.free_size > m.free_size
    assert drained.max_used_size == m.max_used_size  # the high-water mark stays
    arena.check_invariants()


def test_max_used_survives_a_compaction(make_arena):
    size = 96 << 10
    arena = make_arena([QueueSpec("q")], size=size)
    with pytest.raises(ArenaFull):
        while True:
            arena.add("q", "k", "v" * 100)
    full = arena.memory()
    while arena.fetch("q") is not None:
        pass
    # a bigger item than any freed block: the allocator merges the free space (compaction)
    # and gives the run back to the bump pointer
    arena.add("q", "big", "v" * 4000)
    after = arena.memory()
    assert after.fragments == 0
    assert after.max_used_size == full.max_used_size
    assert after.real_used_size < full.real_used_size
    assert after.used_size == _live_block_payload(arena)


def test_an_engine_without_add_times_has_no_oldest_age(make_redis):
    """The Redis engine records no add time: <q>_oldest_age is absent from get_statistics
    and /metrics there (a 0 would never raise an alert), present on the arena."""
    from mi_server.config import MetricsConfig
    from mi_server.mi import MIContext
    from mi_server.mi.commands.statistics import all_stats
    from mi_server.monitoring.prometheus import render, render_all

    engine = make_redis([QueueSpec("q")])
    engine.add("q", "k", "v")
    assert engine.stats()["q"].oldest_added_ns is None
    ctx = MIContext(engine=engine, started=time.time())
    names = [st.full_name for st in all_stats(ctx)]
    assert "mqueue:q_size" in names and "mqueue:q_oldest_age" not in names
    text = render_all(MetricsConfig(), ctx)
    assert b"opensips_queue_size{queue=\"q\"} 1\n" in text and b"oldest_age" not in text
    assert text == render(MetricsConfig(), all_stats(ctx))
