"""Engine test fixtures: arenas under unique /dev/shm names, always unlinked, each test run
with the compiled pop (mi_server/engine/_speedups.c; skipped where it is not built or is
turned off) and with the Python one."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.arena import compiled_pop_plain

MakeArena = Callable[..., Arena]


def unique_name() -> str:
    return f"mqtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["compiled_pop", "python_pop"])
def make_arena(request) -> Iterator[MakeArena]:
    compiled = request.param == "compiled_pop"
    if compiled and compiled_pop_plain() is None:
        pytest.skip("the engine's compiled pop is not built or is turned off")
    made: list[Arena] = []

    def make(queues: Sequence[QueueSpec], size: int = 1 << 20) -> Arena:
        arena = Arena.create(unique_name(), size, queues)
        made.append(arena)
        if compiled:
            assert vars(arena)["_pop_plain"] is compiled_pop_plain()
        else:
            vars(arena).pop("_pop_plain", None)  # the class's Python pop runs
        return arena

    yield make
    for arena in made:
        arena.unlink()
        arena.close()
