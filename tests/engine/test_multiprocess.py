"""Several producer and consumer processes on the same queues: every item comes out
exactly once (consumed or still queued), per-producer order is kept, the arena stays sound."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from mi_server.engine import Arena, QueueSpec

from .conftest import lock_held_by_child

PRODUCERS, CONSUMERS, ITEMS = 3, 3, 2000
QUEUES = ("plain", "keyed")


def produce(arena: Arena, worker: int) -> None:
    for i in range(ITEMS):
        item = f"{worker}:{i}"
        arena.add(QUEUES[i % 2], item, item)  # unique keys: addmode 2 replaces nothing


def consume(arena: Arena, worker: int, out: Path, done_flag: Path) -> None:
    got: list[str] = []
    while True:
        drained = True
        for q in QUEUES:
            if worker % 2:
                items = arena.fetch_many(q, 7)
            else:
                item = arena.fetch(q)
                items = [item] if item else []
            got.extend(f"{q} {v}" for _k, v in items)
            drained = drained and not items
        if drained and done_flag.exists() and arena.size("plain") == 0:
            break
    out.write_text("\n".join(got))


def fork(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        finally:
            os._exit(code)
    return pid


def wait_ok(pid: int) -> None:
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.timeout(120)
def test_concurrent_producers_and_consumers_conserve_items(make_arena, tmp_path):
    arena = make_arena([QueueSpec("plain"), QueueSpec("keyed", addmode=2)], size=16 << 20)
    done_flag = tmp_path / "producers-done"
    outs = [tmp_path / f"consumer{c}.txt" for c in range(CONSUMERS)]
    consumers = [fork(consume, arena, c, outs[c], done_flag) for c in range(CONSUMERS)]
    producers = [fork(produce, arena, p) for p in range(PRODUCERS)]
    for pid in producers:
        wait_ok(pid)
    done_flag.touch()
    for pid in consumers:
        wait_ok(pid)

    seen: Counter = Counter()
    for out in outs:
        lines = [line for line in out.read_text().splitlines() if line]
        seen.update(lines)
        # one consumer sees each producer's items in the order they were added
        for q in QUEUES:
            for p in range(PRODUCERS):
                seq = [int(v.split(":")[1]) for line in lines
                       for qq, v in [line.split(" ")] if qq == q and v.startswith(f"{p}:")]
                assert seq == sorted(seq)
    for q in QUEUES:
        seen.update(f"{q} {v}" for _k, v in arena.snapshot(q))
    expected = Counter(
        f"{QUEUES[i % 2]} {p}:{i}" for p in range(PRODUCERS) for i in range(ITEMS)
    )
    assert seen == expected
    arena.check_invariants()


def test_forked_child_has_its_own_lock(make_arena):
    """A child holding the lock must block its parent (flock on a shared open file
    description would let both in; a mutex is held by one thread): the parent waits for
    the lock until the child lets it go."""
    arena = make_arena([QueueSpec("q")])
    got = threading.Event()

    def take() -> None:
        arena._acquire()
        got.set()
        arena._release()

    with lock_held_by_child(arena):
        taker = threading.Thread(target=take)
        taker.start()
        assert not got.wait(0.3), "the parent got the lock its child holds"
    assert got.wait(10), "the parent never got the lock back"
    taker.join()
    arena.add("q", "k", "v")  # the lock is free again
    assert arena.size("q") == 1


def test_a_child_that_cannot_reopen_the_lock_refuses_to_touch_the_arena(make_arena,
                                                                          monkeypatch):
    """If the re-open after fork fails (EMFILE, no /proc), the child must not go on with
    the parent's open file description: it would "hold" the lock whenever the parent does."""
    import errno

    from mi_server.engine.shm import lifecycle

    arena = make_arena([QueueSpec("q")])

    def fail(fd: int, path: str) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(lifecycle, "reopen", fail)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            arena.add("q", "k", "v")
        except ValueError:  # as on a closed arena: no lock fd
            code = 0
        finally:
            os._exit(code)
    wait_ok(pid)
    assert arena.size("q") == 0
    arena.add("q", "k", "v")  # the parent's lock is untouched
    assert arena.size("q") == 1
