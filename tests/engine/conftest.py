"""Engine test fixtures: arenas under unique /dev/shm names, always unlinked, each test run
with the engine's compiled part (mi_server/engine/shm/_speedups.c: the mutex lock and the
compiled pop; skipped where it is not built or is turned off) and without it (flock and
the Python pop); `make_engine` adds the Redis engine (the Redis on 127.0.0.1:6379, or
MQ_TEST_REDIS_URL, under a key prefix of its own, deleted afterwards) for the tests of
behaviour every backend shares."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm import speedups
from mi_server.engine.shm.arena import compiled_pop_plain
from mi_server.engine.shm.layout import LOCK_FLOCK, LOCK_MUTEX

MakeArena = Callable[..., Arena]
REDIS_URL = os.environ.get("MQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique_name() -> str:
    return f"mqtest-{uuid.uuid4().hex[:12]}"


def _arena_maker(compiled: bool, monkeypatch) -> tuple[MakeArena, list[Arena]]:
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

    return make, made


@pytest.fixture(params=["compiled", "python"])
def make_arena(request, monkeypatch) -> Iterator[MakeArena]:
    make, made = _arena_maker(request.param == "compiled", monkeypatch)
    yield make
    for arena in made:
        arena.unlink()
        arena.close()


def unique_prefix() -> str:
    return f"mqtest-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    """Remove every key of a test's prefix (its queues' keys are `<prefix>:{q}:...`)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def make_redis() -> Iterator[Callable[..., Any]]:
    """RedisEngine.open on a prefix of its own; every engine made is closed and the
    prefix's keys deleted at the end.  make(queues, prefix=None) -> RedisEngine."""
    from mi_server.engine.redis import RedisEngine

    made: list[tuple[RedisEngine, str]] = []

    def make(queues: Sequence[QueueSpec], size: int = 0, prefix: str | None = None
             ) -> RedisEngine:
        prefix = prefix or unique_prefix()
        engine = RedisEngine.open(REDIS_URL, prefix, queues)
        made.append((engine, prefix))
        return engine

    yield make
    for engine, prefix in made:
        engine.close()
        delete_prefix(REDIS_URL, prefix)


@pytest.fixture(params=["compiled", "python", "redis"])
def make_engine(request, monkeypatch) -> Iterator[Callable[..., Any]]:
    """make(queues, size=1 << 20): an engine of each backend (size is the arena's)."""
    if request.param == "redis":
        yield request.getfixturevalue("make_redis")
        return
    make, made = _arena_maker(request.param == "compiled", monkeypatch)
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
