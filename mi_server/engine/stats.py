"""Per-queue counters as the engine reports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QueueStats:
    """Counters since creation or the last `reset_stats`.

    - size: items queued now (never reset).
    - added: adds that returned success, *including* addmode-1 adds whose item was dropped.
    - fetched: items removed by fetch / fetch_many / mq_fetch.
    - dropped_size: oldest items evicted because the queue exceeded its size.
    - dropped_addmode: addmode 1: new items refused (a same-key item was queued);
      addmode 2: queued items replaced by a newer one with the same key.

    So, with no reset in between: size == added - fetched - dropped_size - dropped_addmode.
    """

    size: int
    added: int
    fetched: int
    dropped_size: int
    dropped_addmode: int
