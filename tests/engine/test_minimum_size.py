"""The smallest arena the layout accepts: refused below it with a clear ValueError before
any file, mapping or lock is made; usable at it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from mi_server.engine import Arena, QueueSpec
from mi_server.engine.shm.layout import minimum_size

QUEUE_SETS = [[], [QueueSpec("q")], [QueueSpec("q"), QueueSpec("k", addmode=1)],
              [QueueSpec(f"queue{n}", addmode=n % 3) for n in range(50)]]


@pytest.mark.parametrize("queues", QUEUE_SETS)
def test_below_the_minimum_is_refused_and_at_it_the_arena_works(queues):
    least = minimum_size(queues)
    assert least % 16 == 0
    for size in (1, 4096, least - 16):
        name = f"mqmin-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with pytest.raises(ValueError, match=f"it needs at least {least} bytes"):
            Arena.create(name, size, queues)
        assert not Path(f"/dev/shm/{name}").exists()
    arena = Arena.create(f"mqmin-{os.getpid()}-{uuid.uuid4().hex[:8]}", least, queues)
    try:
        if queues:
            arena.add(queues[0].name, "k", "v")
            assert arena.fetch(queues[0].name) == ("k", "v")
        arena.check_invariants()
    finally:
        arena.close()
        arena.unlink()
