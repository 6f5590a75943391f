"""The arena's memory use (shmem: statistics), read from the allocator's own words.

Nothing on the add/fetch paths keeps these figures: they are derived here, under the lock,
from the bump pointer, its high-water mark and a walk of the free lists (one step per free
block, so the cost grows with fragmentation, not with the items queued).
"""

from __future__ import annotations

from ..stats import MemoryStats
from .layout import (
    H_BUMP,
    H_FREE,
    H_HEAP_END,
    H_HEAP_START,
    H_LARGE,
    H_PEAK_BUMP,
    H_SIZE,
    I_BWORDS,
    I_NEXT,
    ITEM_HEADER_BYTES,
    MAX_CLASS,
)


def read_memory(w: memoryview, live_items: int) -> MemoryStats:
    """MemoryStats of the arena words `w` (lock held, no operation half-done), given the
    number of items queued in all its queues."""
    total = w[H_SIZE]
    start, bump, end = w[H_HEAP_START], w[H_BUMP], w[H_HEAP_END]
    free_words = 0
    fragments = 0
    heads = [p for p in w[H_FREE : H_FREE + MAX_CLASS].tolist() if p]
    if w[H_LARGE]:
        heads.append(w[H_LARGE])
    for p in heads:
        while p:
            free_words += w[p + I_BWORDS]
            fragments += 1
            p = w[p + I_NEXT]
    free = (end - bump + free_words) * 8
    live_block_bytes = (bump - start - free_words) * 8
    # everything outside the heap (layout before it, the unaligned tail after) is used
    peak = max(w[H_PEAK_BUMP], bump)
    return MemoryStats(
        total_size=total,
        max_used_size=total - (end - peak) * 8,
        free_size=free,
        used_size=live_block_bytes - live_items * ITEM_HEADER_BYTES,
        real_used_size=total - free,
        fragments=fragments,
    )
