"""Engine test fixtures: arenas under unique /dev/shm names, always unlinked, each test run
with the engine's compiled part (mi_server/engine/_speedups.c: the mutex lock and the
compiled pop; skipped where it is not built or is turned off) and without it (flock and
the Python pop)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest

from mi_server.engine import Arena, QueueSpec, speedups
from mi_server.engine.arena import compiled_pop_plain
from mi_server.engine.layout import LOCK_FLOCK, LOCK_MUTEX

MakeArena = Callable[..., Arena]


def unique_name() -> str:
    return f"mqtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["compiled", "python"])
def make_arena(request, monkeypatch) -> Iterator[MakeArena]:
    compiled = request.param == "compiled"
    if compiled and speedups.load() is None:
        pytest.skip("the engine's compiled part is not built or is turned off")
    if not compiled:
        monkeypatch.setenv(speedups.ENV, "0")
    made: list[Arena] = []

    def make(queues: Sequence[QueueSpec], size: int = 1 << 20) -> Arena:
        arena = Arena.create(unique_name(), size, queues)
        made.append(arena)
        if compiled:
            assert vars(arena)["_pop_plain"] is compiled_pop_plain()
            assert arena._lock_kind == LOCK_MUTEX
        else:
            assert "_pop_plain" not in vars(arena)  # the class's Python pop runs
            assert arena._lock_kind == LOCK_FLOCK
        return arena

    yield make
    for arena in made:
        arena.unlink()
        arena.close()


@contextmanager
def lock_held_by_child(arena: Arena) -> Iterator[int]:
    """A forked child takes the arena lock and keeps it until the block ends (then it lets
    go and exits 0); the child's pid."""
    to_parent, to_child = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        arena._acquire()
        os.write(to_parent[1], b"x")
        os.read(to_child[0], 1)  # hold until the parent is done
        arena._release()
        os._exit(0)
    try:
        assert os.read(to_parent[0], 1) == b"x"
        yield pid
    finally:
        os.write(to_child[1], b"y")
        _pid, status = os.waitpid(pid, 0)
        for fd in (*to_parent, *to_child):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
