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


class ArenaClosed(RuntimeError):
    """The arena's server stopped and closed it: nothing it holds is served any more (a
    process that attached it must attach the new arena its server's next start creates)."""
