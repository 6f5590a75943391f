"""A real engine Arena plus an MICore over it, for the MI tests (no fake engine)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from mi_server.engine import Arena, QueueSpec
from mi_server.mi import MIContext, MICore, ProcessInfo, build_core

ARENA_SIZE = 1 << 20


@contextmanager
def arena_core(
    queues: Iterable[QueueSpec] = (),
    items: Iterable[tuple[str, str, str]] = (),
    size: int = ARENA_SIZE,
    **ctx_fields,
) -> Iterator[tuple[MICore, Arena]]:
    """A fresh uniquely named arena with `queues` and pre-added `items`; unlinked after."""
    arena = Arena.create(f"mqmi-test-{os.getpid()}-{uuid.uuid4().hex[:12]}", size, list(queues))
    try:
        for q, k, v in items:
            arena.add(q, k, v)
        ctx_fields.setdefault("started", time.time())
        ctx_fields.setdefault("argv", ["mi-server", "-c", "mq.yaml"])
        ctx_fields.setdefault("processes", lambda: [ProcessInfo(0, os.getpid(), "attendant")])
        yield build_core(MIContext(engine=arena, **ctx_fields)), arena
    finally:
        arena.close()
        arena.unlink()
