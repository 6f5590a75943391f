"""The shared-memory queue engine (docs/ARCHITECTURE.md section 2)."""

from .arena import Arena
from .errors import ArenaClosed, ArenaCorrupt, ArenaFull, UnknownQueue
from .spec import QueueSpec
from .stats import MemoryStats, QueueStats

__all__ = [
    "Arena", "ArenaClosed", "ArenaCorrupt", "ArenaFull", "MemoryStats", "QueueSpec",
    "QueueStats", "UnknownQueue",
]
