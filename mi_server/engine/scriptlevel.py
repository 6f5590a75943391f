"""The script-level API (OpenSIPS return codes, docs/operations.md) over any engine's raising API.

Each backend mixes this in (the shared-memory Arena and the Redis engine).
"""

from __future__ import annotations

import logging

from .errors import ArenaFull, UnknownQueue

_log = logging.getLogger("mqueue.engine")


class ScriptLevel:
    """mq_add / mq_fetch / $mqk / $mqv / mq_pv_free / mq_size / $mq_size over add, fetch
    and size.  `_last` is "the last item fetched by this process", per queue."""

    _last: dict[str, tuple[str, str]]

    def add(self, q: str, key: str, value: str) -> None:
        raise NotImplementedError

    def fetch(self, q: str) -> tuple[str, str] | None:
        raise NotImplementedError

    def size(self, q: str) -> int:
        raise NotImplementedError

    def mq_add(self, q: str, key: str, value: str) -> bool:
        try:
            self.add(q, key, value)
        except UnknownQueue:
            return False
        except ArenaFull:
            _log.error("no more memory for an item of queue %r (%d+%d bytes)",
                       q, len(key), len(value))
            return False
        return True

    def mq_fetch(self, q: str) -> int:
        """1 and this process's last item set / -1 unknown queue / -2 empty."""
        try:
            item = self.fetch(q)
        except UnknownQueue:
            return -1
        if item is None:
            return -2
        self._last[q] = item
        return 1

    def mqk(self, q: str) -> str | None:
        item = self._last.get(q)
        return item[0] if item is not None else None

    def mqv(self, q: str) -> str | None:
        item = self._last.get(q)
        return item[1] if item is not None else None

    def mq_pv_free(self, q: str) -> None:
        self._last.pop(q, None)

    def mq_size(self, q: str) -> int:
        """n > 0 / -1 empty / -2 unknown."""
        try:
            n = self.size(q)
        except UnknownQueue:
            return -2
        return n if n > 0 else -1

    def pv_mq_size(self, q: str) -> int:
        """$mq_size: 0 for an empty queue; UnknownQueue for an unknown one."""
        return self.size(q)
