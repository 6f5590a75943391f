"""The definition of one queue, as the `mqueue` modparam string or YAML mapping gives it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueSpec:
    """One queue's definition. Values outside the documented ranges act as the defaults."""

    name: str
    size: int = 0  # <= 0: unlimited
    addmode: int = 0  # 0 append, 1 keep oldest per key, 2 keep newest per key
    dbmode: int = 0  # 0 none, 1 load+save, 2 save only, 3 load only (documented meaning)

    @property
    def effective_addmode(self) -> int:
        """addmode values other than 1 and 2 act as 0 (OpenSIPS)."""
        return self.addmode if self.addmode in (1, 2) else 0

    @property
    def effective_dbmode(self) -> int:
        """dbmode values other than 1, 2 and 3 act as 0 (OpenSIPS)."""
        return self.dbmode if self.dbmode in (1, 2, 3) else 0

    @property
    def loads_at_start(self) -> bool:
        return self.effective_dbmode in (1, 3)

    @property
    def saves_at_stop(self) -> bool:
        return self.effective_dbmode in (1, 2)
