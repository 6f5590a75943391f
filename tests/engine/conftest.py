"""Engine test fixtures: arenas under unique /dev/shm names, always unlinked."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from mi_server.engine import Arena, QueueSpec

MakeArena = Callable[..., Arena]


def unique_name() -> str:
    return f"mqtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_arena() -> Iterator[MakeArena]:
    made: list[Arena] = []

    def make(queues: Sequence[QueueSpec], size: int = 1 << 20) -> Arena:
        arena = Arena.create(unique_name(), size, queues)
        made.append(arena)
        return arena

    yield make
    for arena in made:
        arena.unlink()
        arena.close()
