"""What every queue engine offers: the one contract that MI commands, consumers and
persistence program against (docs/ARCHITECTURE.md section 2).

Two backends fulfil it: the shared-memory `Arena` (mi_server.engine.shm.arena, one host) and
`RedisEngine` (mi_server.engine.redis, any number of instances and hosts).  backend.py is
the one place that opens the configured one; nothing else knows which runs.

Errors every backend raises: UnknownQueue (the name is not defined), ArenaFull (no memory
for the item; nothing changed), EngineUnavailable (the backend's store cannot be reached
now; retry later).  Keys, values and names are `str`, any JSON string included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from .spec import QueueSpec
from .stats import QueueStats


@runtime_checkable
class Engine(Protocol):
    """The queue operations, each atomic; docs/configuration.md ("mqueue") for what they do."""

    name: str  # where the queues are, for log lines

    def specs(self) -> list[QueueSpec]:
        """The queue definitions, in definition order."""
        ...

    def add(self, q: str, key: str, value: str) -> None:
        """Queue (key, value) by the queue's addmode and size."""
        ...

    def fetch(self, q: str) -> tuple[str, str] | None:
        """Remove and return the oldest item; None when empty."""
        ...

    def fetch_many(self, q: str, limit: int) -> list[tuple[str, str]]:
        """Remove and return up to `limit` items, oldest first, in one atomic step."""
        ...

    def fetch_pending(self, q: str) -> tuple[str, str] | None:
        """A conditional removal, for a reply that might not be deliverable: the oldest
        item, whose removal counts only once `settle(True)` commits it; `settle(False)`
        puts it back at the head.  Nobody else gets the item meanwhile, and a process that
        dies before it settles loses nothing (the item goes back).  The caller settles at
        once and runs no other operation of this engine object in between."""
        ...

    # Optional (the shared-memory Arena has it; MI commands look it up with getattr and
    # run unheld without it): fetch_many_pending(q, limit) -> list, fetch_many whose
    # removal likewise counts only once settle(True) commits it.

    def settle(self, commit: bool) -> None:
        """End what fetch_pending (or fetch_many_pending) holds (nothing held: no-op).
        RuntimeError when the hold had already been undone (the item is back in the
        queue)."""
        ...

    def size(self, q: str) -> int:
        """Items queued now."""
        ...

    def sizes(self) -> list[tuple[str, int]]:
        """(name, size) of every queue, in REVERSE definition order (as OpenSIPS lists)."""
        ...

    def snapshot(self, q: str) -> list[tuple[str, str]]:
        """Every queued item, oldest first; nothing removed."""
        ...

    def stats(self) -> dict[str, QueueStats]:
        """Per-queue counters, in definition order."""
        ...

    def reset_stats(self, q: str | None = None, counter: str | None = None) -> None:
        """Zero the counters (or one, by QueueStats field name) of one queue or all."""
        ...

    def close(self) -> None:
        """Let go of the store in this process; the queues themselves stay."""
        ...


class Claim(NamedTuple):
    """One item taken for at-least-once delivery (Claiming.claim)."""

    token: bytes  # what ack and renew name it by
    key: str
    value: str
    claims: int  # how many times it has been claimed, this time included (1: first)


@runtime_checkable
class Claiming(Protocol):
    """At-least-once delivery, offered by the backends that can hold an item for a
    consumer across processes and hosts (Redis; docs/consumers.md): a claimed item stays
    out of its queue until acknowledged, or goes back to the queue's head once its lease
    ends (its consumer died, stalled or failed) for another consumer to take."""

    def claim(self, q: str, limit: int, lease: float) -> list[Claim]:
        """Up to `limit` items, oldest first, each held for `lease` seconds."""
        ...

    def ack(self, q: str, tokens: Sequence[bytes]) -> int:
        """The items are handled: drop them; how many were still held."""
        ...

    def renew(self, q: str, tokens: Sequence[bytes], lease: float) -> int:
        """Their holds end `lease` seconds from now (0: at once); how many were held."""
        ...
