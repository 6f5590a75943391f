"""Queue semantics (docs/configuration.md, "mqueue"), table-driven, in one process; the
tests taking `make_engine` run against every backend (shm with and without its C part,
Redis), the `make_arena` ones pin what only the shared-memory arena has."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mi_server.engine import Arena, ArenaFull, QueueSpec, QueueStats, UnknownQueue
from mi_server.engine.shm.layout import H_SPECS_LEN, H_VERSION, MAGIC, VERSION
from tests.engine.conftest import unique_name

ROOT = Path(__file__).resolve().parents[2]

# (queue definition, adds as (key, value), expected queue oldest first, expected stats)
ADD_CASES = [
    pytest.param(
        QueueSpec("q"), [("a", "1"), ("b", "2"), ("a", "3")],
        [("a", "1"), ("b", "2"), ("a", "3")], (3, 0, 0), id="addmode0_appends_duplicates",
    ),
    pytest.param(
        QueueSpec("q", addmode=1), [("a", "1"), ("b", "2"), ("a", "3")],
        [("a", "1"), ("b", "2")], (3, 0, 1), id="addmode1_keeps_oldest_drops_new",
    ),
    pytest.param(
        QueueSpec("q", addmode=2), [("a", "1"), ("b", "2"), ("a", "3")],
        [("b", "2"), ("a", "3")], (3, 0, 1), id="addmode2_keeps_newest_at_tail",
    ),
    pytest.param(
        QueueSpec("q", addmode=7), [("a", "1"), ("a", "2")],
        [("a", "1"), ("a", "2")], (2, 0, 0), id="unknown_addmode_acts_as_0",
    ),
    pytest.param(
        QueueSpec("q", size=2), [("a", "1"), ("b", "2"), ("c", "3")],
        [("b", "2"), ("c", "3")], (3, 1, 0), id="size_evicts_oldest",
    ),
    pytest.param(
        QueueSpec("q", size=-5), [("a", str(i)) for i in range(50)],
        [("a", str(i)) for i in range(50)], (50, 0, 0), id="negative_size_is_unlimited",
    ),
    pytest.param(
        QueueSpec("q", size=2, addmode=1), [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")],
        [("b", "2"), ("c", "4")], (4, 1, 1), id="addmode1_drop_does_not_evict",
    ),
    pytest.param(
        QueueSpec("q", size=2, addmode=2), [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")],
        [("a", "3"), ("c", "4")], (4, 1, 1), id="addmode2_replace_then_evict",
    ),
    pytest.param(
        QueueSpec("q", addmode=2), [("K", "1"), ("k", "2"), ("k ", "3"), ("k", "4")],
        [("K", "1"), ("k ", "3"), ("k", "4")], (4, 0, 1), id="keys_byte_exact_case_sensitive",
    ),
    pytest.param(
        QueueSpec("q", addmode=2), [("é", "1"), ("e\u0301", "2"), ("é", "3")],
        [("e\u0301", "2"), ("é", "3")], (3, 0, 1), id="no_unicode_normalisation",
    ),
    pytest.param(
        QueueSpec("q", addmode=1), [("", ""), ("", "x"), ("k", "")],
        [("", ""), ("k", "")], (3, 0, 1), id="empty_key_and_value",
    ),
]


@pytest.mark.parametrize(("spec", "adds", "queued", "counts"), ADD_CASES)
def test_add_semantics(make_engine, spec, adds, queued, counts):
    arena = make_engine([spec])
    for key, value in adds:
        assert arena.mq_add("q", key, value) is True
    assert arena.snapshot("q") == queued
    added, dropped_size, dropped_addmode = counts
    assert arena.stats()["q"] == QueueStats(len(queued), added, 0, dropped_size, dropped_addmode)
    arena.check_invariants()


def test_fetch_is_fifo_and_removes(make_engine):
    arena = make_engine([QueueSpec("q")])
    for i in range(5):
        arena.add("q", f"k{i}", f"v{i}")
    assert arena.fetch("q") == ("k0", "v0")
    assert arena.fetch_many("q", 3) == [("k1", "v1"), ("k2", "v2"), ("k3", "v3")]
    assert arena.fetch_many("q", 10) == [("k4", "v4")]
    assert arena.fetch("q") is None
    assert arena.fetch_many("q", 10) == []
    assert arena.stats()["q"].fetched == 5


def test_fetch_after_addmode2_replace_skips_the_removed_item(make_engine):
    arena = make_engine([QueueSpec("q", addmode=2)])
    for key, value in [("a", "1"), ("b", "2"), ("a", "3")]:
        arena.add("q", key, value)
    assert [arena.fetch("q"), arena.fetch("q"), arena.fetch("q")] == [
        ("b", "2"), ("a", "3"), None]
    arena.add("q", "a", "4")  # the key is free again once fetched
    assert arena.snapshot("q") == [("a", "4")]


# script-level return codes: (call, expected) after q1 := [("k", "v")], q2 := []
SCRIPT_CASES = [
    ("mq_size", "q1", 1), ("mq_size", "q2", -1), ("mq_size", "nope", -2),
    ("pv_mq_size", "q1", 1), ("pv_mq_size", "q2", 0),
    ("mq_fetch", "q1", 1), ("mq_fetch", "q2", -2), ("mq_fetch", "nope", -1),
    ("mq_add", "nope", False),
]


@pytest.mark.parametrize(("call", "queue", "expected"), SCRIPT_CASES)
def test_script_return_codes(make_engine, call, queue, expected):
    arena = make_engine([QueueSpec("q1"), QueueSpec("q2")])
    arena.add("q1", "k", "v")
    args = (queue, "k", "v") if call == "mq_add" else (queue,)
    assert getattr(arena, call)(*args) == expected


def test_mqk_mqv_hold_this_process_last_fetch_per_queue(make_engine):
    arena = make_engine([QueueSpec("q1"), QueueSpec("q2")])
    assert (arena.mqk("q1"), arena.mqv("q1")) == (None, None)
    arena.add("q1", "k1", "v1")
    arena.add("q2", "k2", "v2")
    assert arena.mq_fetch("q1") == 1
    assert (arena.mqk("q1"), arena.mqv("q1")) == ("k1", "v1")
    assert arena.mqk("q2") is None
    assert arena.mq_fetch("q1") == -2  # empty: the last item stays
    assert arena.mqv("q1") == "v1"
    arena.mq_pv_free("q1")
    assert (arena.mqk("q1"), arena.mqv("q1")) == (None, None)


@pytest.mark.parametrize("method", ["fetch", "size", "snapshot", "pv_mq_size"])
def test_unknown_queue_raises(make_engine, method):
    arena = make_engine([QueueSpec("q")])
    with pytest.raises(UnknownQueue):
        getattr(arena, method)("Q")  # names are case-sensitive


def test_unknown_queue_raises_on_add_and_fetch_many(make_engine):
    arena = make_engine([QueueSpec("q")])
    with pytest.raises(UnknownQueue):
        arena.add("x", "k", "v")
    with pytest.raises(UnknownQueue):
        arena.fetch_many("x", 2)


def test_sizes_lists_reverse_definition_order(make_engine):
    arena = make_engine([QueueSpec("first"), QueueSpec("second"), QueueSpec("third")])
    arena.add("second", "k", "v")
    assert arena.sizes() == [("third", 0), ("second", 1), ("first", 0)]
    assert [s.name for s in arena.specs()] == ["first", "second", "third"]
    assert list(arena.stats()) == ["first", "second", "third"]


def test_no_queues(make_engine):
    arena = make_engine([])
    assert arena.sizes() == [] and arena.stats() == {}


@pytest.mark.parametrize("text", [
    "ünïcödé ключ 键 🎉", "\ud800 lone surrogate", "%s%d\\n\"'", "x" * 4096, "\x00nul",
])
def test_strings_round_trip_exactly(make_engine, text):
    arena = make_engine([QueueSpec("q", addmode=2), QueueSpec("p")])
    arena.add("q", text, text[::-1])
    arena.add("q", text, text)  # replace finds the same key bytes
    arena.add("p", text, text)
    assert arena.snapshot("q") == [(text, text)]
    assert arena.fetch("p") == (text, text)
    arena.check_invariants()


def test_reset_stats_zeroes_counters_not_items(make_engine):
    arena = make_engine([QueueSpec("q", size=1), QueueSpec("r")])
    arena.add("q", "a", "1")
    arena.add("q", "b", "2")
    arena.add("r", "c", "3")
    arena.reset_stats("q")
    assert arena.stats()["q"] == QueueStats(1, 0, 0, 0, 0)
    assert arena.stats()["r"].added == 1
    arena.fetch("q")
    assert arena.stats()["q"] == QueueStats(0, 0, 1, 0, 0)
    arena.reset_stats()
    assert arena.stats()["r"] == QueueStats(1, 0, 0, 0, 0)


def test_arena_full_raises_and_keeps_queue_intact(make_arena, caplog):
    arena = make_arena([QueueSpec("q"), QueueSpec("k", addmode=2)], size=96 << 10)
    n = 0
    with pytest.raises(ArenaFull):
        while True:
            arena.add("q", f"k{n}", "v" * 500)
            n += 1
    assert n > 10
    with caplog.at_level(logging.ERROR, logger="mqueue.engine"):
        assert arena.mq_add("q", "big", "v" * 4000) is False
    assert len([r for r in caplog.records if r.name == "mqueue.engine"]) == 1
    with pytest.raises(ArenaFull):
        arena.add("k", "x", "v" * 4000)
    arena.check_invariants()
    assert arena.snapshot("q") == [(f"k{i}", "v" * 500) for i in range(n)]
    assert arena.size("k") == 0
    arena.fetch("q")  # room again: the freed block is reused
    arena.add("q", "ag", "v" * 500)  # the size of k0's block, so it fits in it
    arena.check_invariants()


def test_full_arena_reuses_bigger_free_blocks(make_arena):
    arena = make_arena([QueueSpec("q")], size=96 << 10)
    with pytest.raises(ArenaFull):
        while True:
            arena.add("q", "k", "v" * 2000)
    arena.fetch("q")
    arena.add("q", "small", "v")  # no small block and no bump room: cut from the big one
    arena.check_invariants()
    assert arena.snapshot("q")[-1] == ("small", "v")


def test_create_refuses_existing_name_and_duplicate_queues(make_arena):
    arena = make_arena([QueueSpec("q")])
    with pytest.raises(FileExistsError):
        Arena.create(arena.name, 1 << 20, [QueueSpec("q")])
    with pytest.raises(ValueError):
        Arena.create("mqtest-dup", 1 << 20, [QueueSpec("q"), QueueSpec("q")])


def test_create_takes_a_size_that_is_not_a_multiple_of_the_word(make_arena):
    """shm_size accepts any byte count ("1000001"); the arena rounds it down to whole blocks."""
    arena = make_arena([QueueSpec("q")], size=(1 << 20) + 5)
    arena.add("q", "k", "v")
    assert arena.fetch("q") == ("k", "v")
    arena.check_invariants()
    attached = Arena.attach(arena.name)
    assert attached.size("q") == 0
    attached.close()


def test_attach_from_a_separate_process_sees_and_changes_the_same_queues(make_arena):
    arena = make_arena([QueueSpec("q", addmode=2), QueueSpec("other")])
    arena.add("q", "k1", "v1")
    arena.add("q", "k2", "v2")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from mi_server.engine import Arena; a = Arena.attach(sys.argv[2]);"
        "print(json.dumps([a.snapshot('q'), [s.name for s in a.specs()]]));"
        "a.add('q', 'k1', 'from child'); a.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), arena.name],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert json.loads(out) == [[["k1", "v1"], ["k2", "v2"]], ["q", "other"]]
    assert arena.snapshot("q") == [("k2", "v2"), ("k1", "from child")]
    arena.check_invariants()


def test_reset_stats_of_one_counter_leaves_the_others(make_engine):
    arena = make_engine([QueueSpec("q")])
    for k in "abc":
        arena.add("q", k, "v")
    arena.fetch("q")
    arena.reset_stats("q", "fetched")
    st = arena.stats()["q"]
    assert (st.size, st.added, st.fetched) == (2, 3, 0)
    with pytest.raises(ValueError):
        arena.reset_stats("q", "size")


def _damaged_arena(word: int, value: int) -> bytes:
    """A real arena's bytes with one header word overwritten."""
    arena = Arena.create(unique_name(), 1 << 20, [QueueSpec("q")])
    try:
        arena._w[word] = value
        return bytes(arena._mm)
    finally:
        arena.unlink()
        arena.close()


@pytest.mark.parametrize("content", [
    b"", b"x" * 13, b"\0" * 65536,
    MAGIC.to_bytes(8, "little"),                      # the magic and nothing else
    pytest.param("version", id="another-layout-version"),
    pytest.param("specs", id="unreadable-queue-definitions"),
])
def test_attach_to_a_file_that_is_not_an_arena_is_a_clear_error(content):
    if content == "version":
        content = _damaged_arena(H_VERSION, VERSION + 1)
    elif content == "specs":
        content = _damaged_arena(H_SPECS_LEN, 3)  # cuts the JSON short
    name = unique_name()
    path = f"/dev/shm/{name}"
    with open(path, "wb") as f:
        f.write(content)
    try:
        with pytest.raises(ValueError, match="is not a ready mqueue arena"):
            Arena.attach(name)
    finally:
        os.unlink(path)
