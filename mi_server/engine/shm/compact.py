"""Free-space compaction: merge neighbouring free blocks when an allocation would fail.

The allocator keeps free blocks in exact size classes and never merges them on the way
(it only cuts a block from a bigger one when it must: arena.split), which keeps add and
fetch O(1) with a short undo log.  The price is fragmentation: after a burst of small
items is fetched, the arena can be nearly empty and still refuse a bigger item.
So before an allocation gives up (ArenaFull), the free space is rebuilt once: every heap
block that is not a queued item is free, adjacent free blocks become one block, a free run
ending at the bump pointer gives its words back to it, and all free lists are rebuilt.

Crash safety without logging thousands of words: the pass derives everything from state it
never writes (the queues' item lists, read before any write) plus block sizes, and every
state it leaves half-way is one it reads correctly (a merged run's head covers exactly the
run; free-list heads and links are rewritten from scratch).  So it is simply redone from the
start by whoever takes the lock next: the undo log count holds COMPACTING (odd, never a log
length) for the duration, and `rollback` calls `compact` when it finds it.

Items never move, so nothing outside the engine notices; the queues' contents and counters
are untouched.  It costs a walk of all items and all blocks under the lock, so it runs only
when enough has been freed since the last pass to be worth it (`worth_compacting`).
"""

from __future__ import annotations

from .layout import (
    H_BUMP,
    H_FREE,
    H_FREED_MARK,
    H_HEAP_START,
    H_LARGE,
    H_LOGCNT,
    H_NQ,
    H_PEAK_BUMP,
    H_QTAB,
    I_BWORDS,
    I_NEXT,
    MAX_CLASS,
    Q_DROP_MODE,
    Q_DROP_SIZE,
    Q_FETCHED,
    Q_HEAD,
    Q_MODE,
    Q_WORDS,
    free_list_head,
    queue_length,
)

COMPACTING = 1  # in the log count word: a compaction is under way (log lengths are even)


def _freed_and_queued(w) -> tuple[int, int]:
    """All-time block frees (every queue) and items queued now.  Fetched and evicted items
    freed a block; so did an addmode-2 replace, but not an addmode-1 duplicate, which also
    counts as dropped by addmode and never had a block."""
    qtab = w[H_QTAB]
    freed = queued = 0
    for i in range(w[H_NQ]):
        base = qtab + i * Q_WORDS
        dropped_mode = w[base + Q_DROP_MODE]
        gone = w[base + Q_FETCHED] + w[base + Q_DROP_SIZE] + dropped_mode
        freed += gone if w[base + Q_MODE] == 2 else gone - dropped_mode
        queued += queue_length(w, base)
    return freed, queued


def worth_compacting(w) -> bool:
    """Blocks freed since the last pass > 1/16 of the items queued (so at least one):
    an arena full of live items fails at once, and the cost of the passes stays bounded
    by a constant per freed item however often adds fail."""
    freed, queued = _freed_and_queued(w)
    return freed - w[H_FREED_MARK] > queued >> 4


def compact(w) -> None:
    """Merge adjacent free blocks and rebuild the free lists (under the lock, with no
    operation half-done: the undo log is empty or holds COMPACTING from a dead pass)."""
    w[H_LOGCNT] = COMPACTING
    start, bump = w[H_HEAP_START], w[H_BUMP]
    # Queued items marked with one byte per 2-word heap slot (blocks start 2-word aligned):
    # 1/16 of the heap, one buffer freed at once, where a set of ints would take ~60 bytes
    # per item in small objects (measured: 110 ms and +55 MB for 840k items with a set,
    # 120 ms and a 4 MB buffer like this, 180 ms with one bit per slot).
    used = bytearray(((bump - start) >> 1) + 1)
    qtab = w[H_QTAB]
    for i in range(w[H_NQ]):
        p = w[qtab + i * Q_WORDS + Q_HEAD]
        while p:
            used[(p - start) >> 1] = 1
            p = w[p + I_NEXT]

    runs: list[tuple[int, int]] = []  # (first word, words) of each maximal free run
    p = start
    run = -1
    while p < bump:
        if used[(p - start) >> 1]:
            if run >= 0:
                runs.append((run, p - run))
                run = -1
        elif run < 0:
            run = p
        p += w[p + I_BWORDS]
    new_bump = run if run >= 0 else bump  # a run reaching the bump pointer goes back to it

    for c in range(MAX_CLASS):
        w[H_FREE + c] = 0
    w[H_LARGE] = 0
    for first, words in runs:
        w[first + I_BWORDS] = words
        head = free_list_head(w, first)
        w[first + I_NEXT] = w[head]
        w[head] = first
    if bump > w[H_PEAK_BUMP]:  # before the bump pointer drops: shmem:max_used_size
        w[H_PEAK_BUMP] = bump
    w[H_BUMP] = new_bump
    w[H_FREED_MARK] = _freed_and_queued(w)[0]
    w[H_LOGCNT] = 0
