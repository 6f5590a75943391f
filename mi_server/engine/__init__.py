"""The queue engines (docs/ARCHITECTURE.md section 2): the contract every backend offers
(contract.py), the shared-memory Arena, the Redis engine (redis/), and the one place that
opens the configured backend (backend.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ArenaClosed,
    ArenaCorrupt,
    ArenaFull,
    DefinitionMismatch,
    EngineUnavailable,
    UnknownQueue,
)
from .spec import QueueSpec
from .stats import MemoryStats, QueueStats

if TYPE_CHECKING:
    from .shm.arena import Arena

__all__ = [
    "Arena", "ArenaClosed", "ArenaCorrupt", "ArenaFull", "DefinitionMismatch",
    "EngineUnavailable", "MemoryStats", "QueueSpec", "QueueStats", "UnknownQueue",
]


def __getattr__(name: str) -> Any:
    # Arena on first use: a server on another backend (and the MI commands, which need
    # only the contract and the errors) never loads the shared-memory engine.
    if name == "Arena":
        from .shm.arena import Arena

        return Arena
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
