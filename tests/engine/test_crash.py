"""Crash safety: a process dying at any metadata write (fault injection, every position),
or killed with SIGKILL at random, never leaves the arena inconsistent or locked, and loses
at most the one item the dead process was adding or fetching."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm import speedups
from mi_server.engine.shm.layout import LOCK_FLOCK, LOCK_MUTEX

from .conftest import unique_name
from .faults import DieAtWrite, counting_writes, die_in_child


@pytest.fixture(autouse=True, params=["mutex", "flock"])
def lock_kind(request, monkeypatch) -> int:
    """Every test here with each lock (lock.py): the compiled mutex, skipped where the
    engine's compiled part is not built or is turned off, and flock (the compiled part
    turned off: arenas created then lock with flock and pop in Python)."""
    if request.param == "mutex":
        if speedups.load() is None:
            pytest.skip("the engine's compiled part is not built or is turned off")
        return LOCK_MUTEX
    monkeypatch.setenv(speedups.ENV, "0")
    return LOCK_FLOCK

SPECS = [
    QueueSpec("plain"),
    QueueSpec("bounded", size=2),
    QueueSpec("oldest", addmode=1),
    QueueSpec("newest", size=3, addmode=2),
]


def setup_queues(arena: Arena) -> None:
    for i in range(4):
        arena.add("plain", f"k{i}", "v" * 10)
    arena.fetch("plain")  # leaves a free block of this size class
    arena.add("bounded", "b0", "x")
    arena.add("bounded", "b1", "y")
    arena.add("oldest", "a", "1")
    arena.add("newest", "a", "1")
    arena.add("newest", "b", "2")


def state(arena: Arena) -> tuple:
    return (
        {s.name: arena.snapshot(s.name) for s in SPECS},
        arena.stats(),
        arena.used_bytes(),
    )


Op = Callable[[Arena], object]
OPS: dict[str, Op] = {
    "add_from_bump": lambda a: a.add("plain", "new", "w" * 100),
    "add_from_free_list": lambda a: a.add("plain", "k9", "v" * 10),
    "add_evicting": lambda a: a.add("bounded", "b2", "z"),
    "addmode1_duplicate_dropped": lambda a: a.add("oldest", "a", "2"),
    "addmode1_new_key": lambda a: a.add("oldest", "c", "3"),
    "addmode2_replace": lambda a: a.add("newest", "a", "3"),
    "addmode2_new_key_evicting": lambda a: (a.add("newest", "c", "3"), a.add("newest", "d", "4")),
    "fetch_plain": lambda a: a.fetch("plain"),
    "fetch_keyed": lambda a: a.fetch("newest"),
    "fetch_many": lambda a: a.fetch_many("plain", 2),
    "fetch_pending_committed": lambda a: (a.fetch_pending("plain"), a.settle(True)),
    "fetch_pending_keyed_committed": lambda a: (a.fetch_pending("newest"), a.settle(True)),
    "fetch_pending_undone": lambda a: (a.fetch_pending("plain"), a.settle(False)),
    "reset_stats_one_queue": lambda a: a.reset_stats("bounded"),
}


def fresh_arena() -> Arena:
    arena = Arena.create(unique_name(), 256 << 10, SPECS)  # its lock: see lock_kind
    setup_queues(arena)
    return arena


def count_writes(op: Op) -> tuple[int, list[tuple]]:
    """Metadata writes the op makes, and the states it may legitimately leave behind."""
    arena = fresh_arena()
    try:
        states = [state(arena)]
        if op is OPS["fetch_many"]:  # commits item by item
            arena.fetch("plain")
            states.append(state(arena))
            arena.unlink()
            arena.close()
            arena = fresh_arena()
        if op is OPS["addmode2_new_key_evicting"]:  # two operations
            arena.add("newest", "c", "3")
            states.append(state(arena))
            arena.unlink()
            arena.close()
            arena = fresh_arena()
        with counting_writes(arena) as counter:
            op(arena)
        states.append(state(arena))
        return counter.writes, states
    finally:
        arena.unlink()
        arena.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op_name", list(OPS))
def test_death_at_every_metadata_write_leaves_before_or_after_state(op_name):
    op = OPS[op_name]
    writes, allowed = count_writes(op)
    assert writes > 2
    for at in range(1, writes + 1):
        arena = fresh_arena()
        try:
            assert die_in_child(arena, op, at) == DieAtWrite.EXIT_CODE
            arena.check_invariants()  # takes the lock: rolls the dead op back
            got = state(arena)
            assert got in allowed, f"death at write {at}/{writes}"
            if at < writes:  # only the very last write (the commit) may complete it
                assert got in allowed[:-1], f"death at write {at}/{writes} committed"
            op(arena)  # the arena keeps working afterwards
            arena.check_invariants()
        finally:
            arena.unlink()
            arena.close()


COMPILED_POP_OPS = ["fetch_plain", "fetch_pending_committed", "fetch_pending_undone"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lock_kind", ["mutex"], indirect=True)  # the compiled part on
@pytest.mark.parametrize("op_name", COMPILED_POP_OPS)
def test_death_at_every_store_of_the_compiled_pop_leaves_the_before_state(op_name,
                                                                         lock_kind):
    """The compiled pop (mi_server/engine/shm/_speedups.c) writes the mapping itself, past the
    fault injector's word view: its own counter kills the process after each of its
    stores in turn.  The Python commit comes after them, so a death anywhere in the pop
    must be rolled back to the state before the operation."""
    compiled = speedups.load()
    op = OPS[op_name]
    _writes, allowed = count_writes(op)
    arena = fresh_arena()
    try:
        assert arena._pop_plain is compiled.pop_plain
        compiled._count_stores()
        op(arena)
        stores = compiled._count_stores()
        assert state(arena) == allowed[-1]
    finally:
        arena.unlink()
        arena.close()
    assert stores == 16  # ten log words, the log count, five queue and free-list words
    for at in range(1, stores + 1):
        arena = fresh_arena()
        try:
            pid = os.fork()
            if pid == 0:
                compiled._count_stores(at)
                try:
                    op(arena)
                finally:
                    os._exit(0)
            _pid, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == DieAtWrite.EXIT_CODE, f"store {at}"
            arena.check_invariants()  # takes the lock: rolls the dead pop back
            assert state(arena) == allowed[0], f"death at store {at}/{stores}"
            op(arena)  # the arena keeps working afterwards
            arena.check_invariants()
            assert state(arena) == allowed[-1]
        finally:
            arena.unlink()
            arena.close()


@pytest.mark.timeout(60)
def test_death_during_rollback_is_rolled_back_again():
    op = OPS["addmode2_replace"]
    writes, allowed = count_writes(op)
    for at in range(1, 40):
        arena = fresh_arena()
        try:
            assert die_in_child(arena, op, writes - 1) == DieAtWrite.EXIT_CODE  # all logged
            code = die_in_child(arena, lambda a: a.size("plain"), at)  # dies in rollback
            arena.check_invariants()
            assert state(arena) == allowed[0]
            if code == 0:  # `at` was past the whole rollback: every position was covered
                break
        finally:
            arena.unlink()
            arena.close()
    else:
        pytest.fail("rollback never completed")


# ---- random SIGKILLs ------------------------------------------------------------------

QUEUES = ("plain", "newest")


def hammer(arena: Arena, log_path: Path, worker: int, ops: int | None) -> None:
    """Random adds (unique values) and fetches; one log line after each completed op, in
    a single write().  A kill can still cut that write short where it crosses a page of
    the file (the kernel checks for a fatal signal between pages): see logged_ops."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rng = random.Random(worker)
    seq = 0
    done = 0
    while ops is None or done < ops:
        q = rng.choice(QUEUES)
        if rng.random() < 0.55:
            item = f"{worker}:{seq}"
            arena.add(q, item, item)  # newest: unique keys, so nothing is replaced
            os.write(fd, f"A {q} {item}\n".encode())
            seq += 1
        else:
            got = arena.fetch(q)
            if got is not None:
                os.write(fd, f"F {q} {got[1]}\n".encode())
        done += 1


def logged_ops(log: Path, killed: list[int]) -> list[str]:
    """The complete lines of a worker's log.  Only a killed worker's log may end in a cut
    line, and that op counts as not logged (as when its worker died before the write)."""
    *lines, cut = log.read_text().split("\n")
    if cut:
        assert int(log.stem[1:]) in killed, f"{log.name}: a cut line, but not killed"
    return lines


def start_worker(arena: Arena, tmp: Path, worker: int, ops: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            hammer(arena, tmp / f"w{worker}.log", worker, ops)
        finally:
            os._exit(0)
    return pid


@pytest.mark.timeout(90)
def test_sigkill_at_random_moments_loses_at_most_the_in_flight_items(tmp_path):
    specs = [QueueSpec("plain"), QueueSpec("newest", addmode=2)]
    arena = Arena.create(unique_name(), 32 << 20, specs)
    rng = random.Random(1234)
    try:
        live = {start_worker(arena, tmp_path, w): w for w in range(3)}
        next_worker, killed = 3, []
        for _ in range(20):
            time.sleep(rng.uniform(0.005, 0.04))
            pid = rng.choice(list(live))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed.append(live.pop(pid))
            live[start_worker(arena, tmp_path, next_worker)] = next_worker
            next_worker += 1
        time.sleep(0.02)
        for pid, w in live.items():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            killed.append(w)
        # fresh processes must still get the lock and finish (the timeout catches a hang)
        finishers = [start_worker(arena, tmp_path, next_worker + i, ops=300) for i in range(2)]
        for pid in finishers:
            _pid, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        arena.check_invariants()

        added, seen = Counter(), Counter()
        last_add: dict[int, int] = {}
        for log in tmp_path.glob("w*.log"):
            for line in logged_ops(log, killed):
                kind, q, item = line.split(" ")
                if kind == "A":
                    added[(q, item)] += 1
                    w, s = map(int, item.split(":"))
                    last_add[w] = max(last_add.get(w, -1), s)
                else:
                    seen[(q, item)] += 1
        for q in QUEUES:
            for key, value in arena.snapshot(q):
                assert key == value
                seen[(q, value)] += 1
        assert sum(added.values()) > 100
        assert max(seen.values()) == 1, "an item came out twice"
        extra = seen - added  # added by a killed process that died before logging it
        for _q, item in extra:
            w, s = map(int, item.split(":"))
            assert w in killed and s == last_add.get(w, -1) + 1
        missing = added - seen  # fetched by a killed process that died before logging it
        assert sum(missing.values()) <= len(killed)
        assert len(extra) + sum(missing.values()) <= len(killed)
    finally:
        arena.unlink()
        arena.close()
