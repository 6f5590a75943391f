"""Per-queue counters and the arena's memory as the engine reports them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QueueStats:
    """Counters since creation or the last `reset_stats`.

    - size: items queued now (never reset).
    - added: adds that returned success, *including* addmode-1 adds whose item was dropped.
    - fetched: items removed by fetch / fetch_many / mq_fetch.
    - dropped_size: oldest items evicted because the queue exceeded its size.
    - dropped_addmode: addmode 1: new items refused (a same-key item was queued);
      addmode 2: queued items replaced by a newer one with the same key.
    - oldest_added_ns: time.time_ns() when the item at the head was added; 0 when the queue
      is empty; None where the engine records no add time (Redis: the statistic
      <q>_oldest_age is then absent rather than a 0 that would never alarm anyone).
      Not compared: two reads of the same queue state are equal.

    So, with no reset in between: size == added - fetched - dropped_size - dropped_addmode.
    """

    size: int
    added: int
    fetched: int
    dropped_size: int
    dropped_addmode: int
    oldest_added_ns: int | None = field(default=None, compare=False)


@dataclass
class MemoryStats:
    """The arena's allocator, in bytes, as OpenSIPS's `shmem:` group reports its own.

    - total_size: the arena (shm_size, rounded down to 16 bytes).
    - free_size: what the allocator can still hand out: the never-used heap above the bump
      pointer plus every block on a free list (fragmented space included, as OpenSIPS's).
    - real_used_size: total_size - free_size: the fixed layout (header, queue table, hash
      buckets), the live item blocks with their headers and rounding.
    - used_size: the live items' keys and values (with their 16-byte rounding), what the
      callers asked for.
    - max_used_size: the most the heap has ever been carved (its bump pointer's high-water
      mark) plus the fixed layout; >= real_used_size.
    - fragments: blocks on the free lists.
    """

    total_size: int
    max_used_size: int
    free_size: int
    used_size: int
    real_used_size: int
    fragments: int
