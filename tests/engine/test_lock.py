"""The arena lock's two kinds (mi_server/engine/shm/lock.py): what an arena records, what a
process that cannot use it does, and waiting for it."""

from __future__ import annotations

import signal

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm import speedups
from mi_server.engine.shm.layout import H_LOCK_ABI, H_LOCK_KIND, LOCK_MUTEX

from .conftest import lock_held_by_child, unique_name


class Interrupted(Exception):
    pass


def test_waiting_for_the_lock_runs_signal_handlers(make_arena):
    """A process waiting for a lock that a live holder keeps must still run its signal
    handlers (a SIGTERM must stop it): flock returns EINTR, the mutex wait wakes up to
    look."""
    arena = make_arena([QueueSpec("q")])

    def interrupt(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with lock_held_by_child(arena):
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            # the child keeps the lock until this block ends: only the handler ends the wait
            with pytest.raises(Interrupted):
                arena.add("q", "k", "v")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    arena.add("q", "k", "v")  # the holder is gone: the lock is free
    assert arena.size("q") == 1


def test_the_lock_kind_is_named(make_arena):
    arena = make_arena([QueueSpec("q")])
    assert arena.lock_kind == ("mutex" if arena._lock_kind == LOCK_MUTEX else "flock")
    assert Arena.attach(arena.name).lock_kind == arena.lock_kind


def test_a_mutex_arena_needs_the_compiled_part(monkeypatch):
    if speedups.load() is None:
        pytest.skip("the engine's compiled part is not built or is turned off")
    arena = Arena.create(unique_name(), 1 << 20, [QueueSpec("q")])
    try:
        assert arena._lock_kind == LOCK_MUTEX
        monkeypatch.setattr(speedups, "_module", None)  # as an install without it
        with pytest.raises(ValueError, match="compiled mutex"):
            Arena.attach(arena.name)
    finally:
        arena.unlink()
        arena.close()


def test_an_unknown_lock_kind_is_refused(make_arena):
    arena = make_arena([QueueSpec("q")])
    arena._w[H_LOCK_KIND] = 7
    with pytest.raises(ValueError, match="unknown lock kind 7"):
        Arena.attach(arena.name)


def test_a_mutex_of_another_c_library_is_refused():
    if speedups.load() is None:
        pytest.skip("the engine's compiled part is not built or is turned off")
    arena = Arena.create(unique_name(), 1 << 20, [QueueSpec("q")])
    try:
        assert arena._w[H_LOCK_ABI] == speedups.load().MUTEX_ABI
        arena._w[H_LOCK_ABI] = speedups.load().MUTEX_ABI ^ (3 << 16)
        with pytest.raises(ValueError, match="another C library"):
            Arena.attach(arena.name)
    finally:
        arena.unlink()
        arena.close()
