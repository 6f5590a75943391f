"""Arena.fetch_pending / settle: a fetch whose removal counts only once settled.

mi_fifo's compiled path takes the item, opens the reply FIFO, then commits (or puts the
item back when the FIFO cannot be used).  Pinned here: a commit is exactly a fetch, an
undo leaves every byte of state as it was, nobody sees the removal before the commit, a
process dying before it settles loses nothing, and a misuse is reported instead of
handing out an item that is still queued.  ("As it was": the queues, every counter and
the heap; the undo log's scratch words and the rollback count are the engine's own.)
"""

from __future__ import annotations

import os
import threading

import pytest

from mi_server.engine import Arena, QueueSpec, UnknownQueue

from .faults import DieAtWrite, die_in_child

SPECS = [QueueSpec("plain"), QueueSpec("newest", size=3, addmode=2), QueueSpec("empty")]


def fill(arena: Arena) -> None:
    for i in range(3):
        arena.add("plain", f"k{i}", f"v{i}" * (i + 1))
        arena.add("newest", f"n{i}", str(i))


def state(arena: Arena) -> tuple:
    return ({s.name: arena.snapshot(s.name) for s in SPECS}, arena.stats(),
            arena.used_bytes())


@pytest.fixture
def pair(make_arena):
    """Two arenas filled alike: one for fetch_pending, one for plain fetch."""
    a, b = make_arena(SPECS), make_arena(SPECS)
    fill(a)
    fill(b)
    return a, b


@pytest.mark.parametrize("q", ["plain", "newest"])
def test_a_committed_pending_fetch_is_a_fetch(pair, q):
    a, b = pair
    assert a.fetch_pending(q) == b.fetch(q)
    a.settle(True)
    assert state(a) == state(b)
    a.check_invariants()
    assert a.fetch(q) == b.fetch(q)  # and the arena goes on as the other one does


@pytest.mark.parametrize("q", ["plain", "newest"])
def test_an_undone_pending_fetch_leaves_the_queues_as_they_were(pair, q):
    a, _ = pair
    before = state(a)
    first = a.fetch_pending(q)
    a.settle(False)
    assert state(a) == before
    a.check_invariants()
    assert a.fetch(q) == first  # the same item is still the oldest


def test_an_empty_queue_holds_nothing(make_arena):
    a = make_arena(SPECS)
    other = Arena.attach(a.name)  # its own lock: it would wait for a held one
    try:
        assert a.fetch_pending("empty") is None
        other.add("empty", "k", "v")  # not blocked: the lock was released
        a.settle(True)  # nothing pending: nothing to do
        assert other.size("empty") == 1
    finally:
        other.close()


def test_an_unknown_queue_raises_and_holds_nothing(make_arena):
    a = make_arena(SPECS)
    with pytest.raises(UnknownQueue):
        a.fetch_pending("nope")
    other = Arena.attach(a.name)
    try:
        other.add("plain", "k", "v")
        assert a.fetch_pending("plain") == ("k", "v")  # nothing was left pending before
        a.settle(True)
    finally:
        other.close()


def test_nobody_sees_the_removal_before_it_is_committed(make_arena):
    """Another process's size (lock-free) and fetch wait for the settle; they then see
    the committed state."""
    a = make_arena(SPECS)
    fill(a)
    other = Arena.attach(a.name)
    seen: list = []
    done = threading.Event()

    def look() -> None:
        seen.append(other.size("plain"))
        seen.append(other.fetch("plain"))
        done.set()

    try:
        assert a.fetch_pending("plain") == ("k0", "v0")
        t = threading.Thread(target=look)
        t.start()
        assert not done.wait(0.3)  # still waiting for the lock
        assert seen == []
        a.settle(True)
        assert done.wait(10)
        t.join()
        assert seen == [2, ("k1", "v1v1")]
    finally:
        other.close()


def test_a_process_that_dies_before_it_settles_loses_nothing(make_arena):
    a = make_arena(SPECS)
    fill(a)
    before = state(a)

    def take_and_die(arena: Arena) -> None:
        assert arena.fetch_pending("plain") is not None
        os._exit(DieAtWrite.EXIT_CODE)

    assert die_in_child(a, take_and_die, 0) == DieAtWrite.EXIT_CODE
    assert state(a) == before  # the next locker rolled the removal back
    a.check_invariants()
    assert a.fetch("plain") == ("k0", "v0")


def test_another_operation_in_between_undoes_it_and_settle_says_so(make_arena):
    a = make_arena(SPECS)
    fill(a)
    before = state(a)
    a.fetch_pending("plain")
    assert a.size("newest") == 3  # takes the lock: a busy undo log is rolled back
    with pytest.raises(RuntimeError, match="undone"):
        a.settle(True)
    assert state(a) == before
    other = Arena.attach(a.name)
    try:
        assert other.fetch("plain") == ("k0", "v0")  # the lock is free again
    finally:
        other.close()


def test_a_fetch_pending_left_unsettled_is_put_back_by_the_next(make_arena, caplog):
    """A caller's bug: the next fetch_pending finds the lock its own, rolls the stale
    removal back and says so, instead of leaving the engine locked for good."""
    a = make_arena(SPECS)
    fill(a)
    assert a.fetch_pending("plain") == ("k0", "v0")
    with caplog.at_level("ERROR", logger="mqueue.engine"):
        assert a.fetch_pending("plain") == ("k0", "v0")  # the same item: it was put back
    assert "never settled" in caplog.text
    a.settle(True)
    assert a.size("plain") == 2 and a.stats()["plain"].fetched == 1


def test_settle_checks_the_rollback_count_not_just_a_busy_log(make_arena):
    """Undone by this process, then another process holds its own pending fetch: the log
    is as busy as before, so only the rollback count tells settle(True) that what it
    would commit is not its own."""
    a = make_arena(SPECS)
    fill(a)
    b = Arena.attach(a.name)
    try:
        assert a.fetch_pending("plain") == ("k0", "v0")
        a.size("newest")  # takes the lock: rolls a's removal back, releases the lock
        assert b.fetch_pending("plain") == ("k0", "v0")
        with pytest.raises(RuntimeError, match="undone"):
            a.settle(True)  # must not commit b's removal
        b.settle(False)
        assert a.size("plain") == 3 and a.stats()["plain"].fetched == 0
    finally:
        b.close()


def test_a_failure_while_taking_the_item_leaves_nothing_held(make_arena, monkeypatch):
    a = make_arena(SPECS)
    fill(a)
    before = state(a)
    pop = a._pop_plain

    def pop_then_fail(w, base):
        pop(w, base)  # every write of the removal made, nothing committed
        raise MemoryError

    monkeypatch.setattr(a, "_pop_plain", pop_then_fail)
    with pytest.raises(MemoryError):
        a.fetch_pending("plain")
    monkeypatch.undo()
    assert state(a) == before
    other = Arena.attach(a.name)
    try:
        assert other.fetch("plain") == ("k0", "v0")  # not locked (a hang fails the test)
    finally:
        other.close()
    a.settle(True)  # nothing was left pending
    assert a.size("plain") == 2


def test_closing_the_arena_puts_a_pending_item_back(make_arena):
    a = make_arena(SPECS)
    fill(a)
    b = Arena.attach(a.name)
    try:
        b.fetch_pending("plain")
        b.close()  # drops the lock
        b.settle(True)  # nothing left to settle
        assert a.size("plain") == 3
        assert a.fetch("plain") == ("k0", "v0")
    finally:
        b.close()


def test_a_forked_child_does_not_inherit_the_pending_fetch(make_arena):
    a = make_arena(SPECS)
    fill(a)
    a.fetch_pending("plain")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            a.settle(True)  # not this child's: nothing to do, so no commit
            os.write(w, b"ok")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 2) == b"ok"
    os.close(r)
    os.waitpid(pid, 0)
    a.settle(False)
    assert a.size("plain") == 3


# ---- fetch_many_pending: the bulk form ---------------------------------------------


@pytest.mark.parametrize("q", ["plain", "newest"])
@pytest.mark.parametrize("limit", [1, 2, 10])
def test_a_committed_bulk_is_a_fetch_many(pair, q, limit):
    a, b = pair
    assert a.fetch_many_pending(q, limit) == b.fetch_many(q, limit)
    a.settle(True)
    assert state(a) == state(b)
    a.check_invariants()
    a.add(q, "after", "x")
    b.add(q, "after", "x")
    assert a.fetch_many(q, 10) == b.fetch_many(q, 10)


@pytest.mark.parametrize("q", ["plain", "newest"])
def test_an_undone_bulk_leaves_the_queue_as_it_was_in_order(pair, q):
    a, _ = pair
    before = state(a)
    items = a.fetch_many_pending(q, 2)
    a.settle(False)
    assert state(a) == before
    a.check_invariants()
    assert a.fetch_many(q, 2) == items  # the same items, still first, in order


def test_an_empty_bulk_holds_nothing(make_arena):
    a = make_arena(SPECS)
    assert a.fetch_many_pending("empty", 5) == []
    a.settle(True)  # nothing held: harmless
    other = Arena.attach(a.name)
    try:
        other.add("empty", "k", "v")  # the lock is free
    finally:
        other.close()
    with pytest.raises(UnknownQueue):
        a.fetch_many_pending("nosuch", 1)
    assert a.fetch("empty") == ("k", "v")


def test_a_process_that_dies_holding_a_bulk_loses_nothing(make_arena):
    a = make_arena(SPECS)
    fill(a)
    before = state(a)

    def take_and_die(arena: Arena) -> None:
        assert len(arena.fetch_many_pending("plain", 3)) == 3
        os._exit(DieAtWrite.EXIT_CODE)

    assert die_in_child(a, take_and_die, 0) == DieAtWrite.EXIT_CODE
    assert state(a) == before
    a.check_invariants()
    assert a.fetch("plain") == ("k0", "v0")


def test_a_bulk_whose_queue_changed_before_settle_is_refused(make_arena):
    a = make_arena(SPECS)
    fill(a)
    a.fetch_many_pending("plain", 2)
    assert a.fetch("plain") == ("k0", "v0")  # misuse: another operation in between
    with pytest.raises(RuntimeError, match="changed"):
        a.settle(True)
    assert a.fetch_many("plain", 5) == [("k1", "v1v1"), ("k2", "v2v2v2")]  # nothing else
