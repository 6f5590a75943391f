"""The one place that opens the configured engine (`engine:` in the configuration) and
knows which backend runs; everything else holds an `Engine` (contract.py).

The shared-memory backend imports nothing of Redis, and the Redis backend needs no
/dev/shm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .contract import Engine
from .spec import QueueSpec


def open_engine(engine_cfg: Any, queues: Sequence[QueueSpec], *,
                open_shm: Callable[[], Engine]) -> Engine:
    """The queues in Redis (connected, functions loaded, definitions stored or checked:
    DefinitionMismatch; EngineUnavailable when Redis cannot be reached), or what
    `open_shm` makes: the runtime's arena under shm_name, fresh or adopted from a server
    that died (mi_server.runtime.adoption, which owns that story)."""
    if engine_cfg.backend == "redis":
        from .redis import RedisEngine

        return RedisEngine.open(engine_cfg.url, engine_cfg.prefix, queues,
                                timeout=engine_cfg.timeout)
    return open_shm()


def is_shared_memory(engine: Engine) -> bool:
    from .shm.arena import Arena

    return isinstance(engine, Arena)


def describe(engine: Engine) -> str:
    """Where the queues are, for the start-up line.  An arena's name is what a local
    producer passes to Arena.attach()."""
    if is_shared_memory(engine):
        return f"arena {engine.name} ({engine.lock_kind} lock)"  # type: ignore[attr-defined]
    return f"Redis {engine.name}"


def holds_lock_while_pending(engine: Engine) -> bool:
    """Whether fetch_pending keeps the engine locked until settle: then the FIFO's
    compiled path may hold an mq_fetch across the reply FIFO's open (mi_fifo), and only
    then (its reason to exist is the shm engine's lock; on Redis the Python path serves)."""
    return is_shared_memory(engine)


def release(engine: Engine) -> None:
    """At stop: an arena is marked closed (a producer that attached it gets ArenaClosed
    from then on, instead of adding to queues that nobody will serve or save) and its file
    removed; Redis keeps its queues for the other and the next instances."""
    if is_shared_memory(engine):
        try:
            engine.mark_closed()  # type: ignore[attr-defined]
        finally:
            try:
                engine.unlink()  # type: ignore[attr-defined]
            finally:
                engine.close()
        return
    engine.close()
