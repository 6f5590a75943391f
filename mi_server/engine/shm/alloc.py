"""Allocation of item blocks in the arena's heap: size-class free lists, the bump pointer,
a split of a bigger free block, and a compaction pass when only fragmented space is left
(compact.py).  Every write is logged (undo.py), so a holder that dies mid-allocation is
rolled back like any other operation."""

from __future__ import annotations

from ..errors import ArenaFull
from .compact import compact, worth_compacting
from .layout import (
    H_BUMP,
    H_FREE,
    H_HEAP_END,
    H_LARGE,
    H_LOGCNT,
    I_BWORDS,
    I_NEXT,
    I_PAYLOAD,
    ITEM_HEADER_BYTES,
    MAX_CLASS,
    free_list_head,
)
from .undo import logged_write


def block_words(key_len: int, value_len: int) -> int:
    """Words of the block holding an item: header + key + value, rounded up to 16 bytes."""
    return ((ITEM_HEADER_BYTES + key_len + value_len + 15) >> 4) << 1


def split(w: memoryview, p: int, nwords: int) -> None:
    """Shrink the free block p (already taken off its list) to nwords words and put the
    rest, when it can hold a block header, on the free list of its size.  The rest's header
    words lie inside p: free space until commit, so only p's size and the list head are
    logged (a rollback gives p back whole; the rest's header is then interior garbage)."""
    rest = w[p + I_BWORDS] - nwords
    if rest < I_PAYLOAD:
        return  # too small to be a block: p stays a little bigger than asked
    logged_write(w, p + I_BWORDS, nwords)
    r = p + nwords
    w[r + I_BWORDS] = rest
    head = free_list_head(w, r)
    w[r + I_NEXT] = w[head]
    logged_write(w, head, r)


def alloc(w: memoryview, nwords: int) -> int:
    """A block of at least nwords words (logged); its I_NEXT is left for the caller."""
    c = nwords >> 1
    if c < MAX_CLASS:
        p = w[H_FREE + c]
        if p:
            logged_write(w, H_FREE + c, w[p + I_NEXT])
            return p
    bump = w[H_BUMP]
    if bump + nwords <= w[H_HEAP_END]:
        logged_write(w, H_BUMP, bump + nwords)
        w[bump + I_BWORDS] = nwords  # above the old bump: free space, no log needed
        return bump
    # Nearly full: cut the block from a bigger free one (the rest stays free).
    for cc in range(c + 1, MAX_CLASS):
        p = w[H_FREE + cc]
        if p:
            logged_write(w, H_FREE + cc, w[p + I_NEXT])
            split(w, p, nwords)
            return p
    prev, p = H_LARGE, w[H_LARGE]
    while p:
        if w[p + I_BWORDS] >= nwords:
            logged_write(w, prev, w[p + I_NEXT])
            split(w, p, nwords)
            return p
        prev, p = p + I_NEXT, w[p + I_NEXT]
    # Full, or only fragmented: merge the free space and try once more.  The pass itself is
    # not logged (see compact.py), so it must come before the operation logs anything:
    # every caller allocates first.
    assert w[H_LOGCNT] == 0, "alloc after a logged write: compaction would be unsafe"
    if worth_compacting(w):
        compact(w)
        return alloc(w, nwords)  # compact() moved the mark: no second pass from here
    raise ArenaFull(f"no room in the arena for an item of {nwords * 8} bytes")


def free(w: memoryview, p: int) -> None:
    fh = free_list_head(w, p)
    logged_write(w, p + I_NEXT, w[fh])
    logged_write(w, fh, p)
