"""The exceptions the engine raises across its API."""

from __future__ import annotations


class UnknownQueue(KeyError):
    """The queue name is not defined in this arena."""


class ArenaFull(MemoryError):
    """No block in the arena is big enough for the item; nothing queued was touched."""


class ArenaCorrupt(RuntimeError):
    """`check_invariants` found a broken structure (a bug, never expected in use)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]))
        self.problems = problems


class EngineUnavailable(RuntimeError):
    """The engine's store cannot be reached now (Redis down, a cut link, a time-out); the
    operation may be retried later.  Nothing changed, except that an operation whose reply
    was lost may have run (docs/redis.md "Failures")."""


class ArenaClosed(EngineUnavailable):
    """The arena's server stopped and closed it: nothing it holds is served any more (a
    process that attached it must attach the new arena its server's next start creates).
    Nothing changed.  An EngineUnavailable, so that an MI request still running in a
    process of a server that died while another adopted its arena is answered 500 "Queue
    engine unavailable", not acknowledged, without a traceback."""


class DefinitionMismatch(ValueError):
    """The queue is already defined in the shared store with another size or addmode."""
