"""A full consistency check of an arena: what tests run after every step and every crash.

Verified, under the lock and after any pending rollback:
- every queue's list is linked both ways, its tail and count match, size limits hold;
- each item belongs to its queue, its block can hold its key and value;
- keyed queues (addmode 1/2): each item's stored hash is crc32 of its key, keys are unique,
  and the hash index holds exactly the items of keyed queues, each in its own bucket;
- free lists hold blocks of their size class; live and free blocks are disjoint, inside the
  heap, and tile it exactly up to the bump pointer (no block leaked or shared).
"""

from __future__ import annotations

import mmap
import zlib
from contextlib import AbstractContextManager
from typing import Protocol

from ..errors import ArenaCorrupt
from ..spec import QueueSpec
from .alloc import block_words
from .layout import (
    H_BKT,
    H_BMASK,
    H_BUMP,
    H_FREE,
    H_HEAP_END,
    H_HEAP_START,
    H_LARGE,
    I_BWORDS,
    I_HASH,
    I_HNEXT,
    I_LENS,
    I_NEXT,
    I_PAYLOAD,
    I_PREV,
    M32,
    MAX_CLASS,
    Q_HEAD,
    Q_TAIL,
    queue_length,
)


class Inspected(Protocol):
    """What the check reads of an Arena (arena.py imports this module, never back)."""

    _mm: mmap.mmap
    _specs: list[QueueSpec]
    _queues: dict[str, tuple[int, int, int, int, int]]

    def _locked(self) -> AbstractContextManager[memoryview]: ...


def check_invariants(arena: Inspected) -> None:
    problems: list[str] = []
    with arena._locked() as w:
        mm = arena._mm
        start, bump, end = w[H_HEAP_START], w[H_BUMP], w[H_HEAP_END]
        if not start <= bump <= end:
            raise ArenaCorrupt([f"bump {bump} outside heap [{start}, {end}]"])
        max_steps = (bump - start) // 6 + 1  # a block is at least 6 words (the header)
        blocks: dict[int, int] = {}

        def take_block(p: int, what: str) -> bool:
            if not (start <= p < bump) or (p - start) & 1:
                problems.append(f"{what}: block {p} outside the heap or misaligned")
                return False
            bw = w[p + I_BWORDS]
            if bw < 6 or bw & 1 or p + bw > bump:
                problems.append(f"{what}: block {p} has bad size {bw}")
                return False
            if p in blocks:
                problems.append(f"{what}: block {p} reachable twice")
                return False
            blocks[p] = bw
            return True

        keyed_items: set[int] = set()
        for spec in arena._specs:
            base, qidx, limit, mode, seed = arena._queues[spec.name]
            name = spec.name
            if (limit, mode) != (max(spec.size, 0), spec.effective_addmode):
                problems.append(f"queue {name!r}: size/addmode {limit}/{mode} != definition")
            prev, p, n = 0, w[base + Q_HEAD], 0
            keys: set[bytes] = set()
            while p:
                if n > max_steps:
                    problems.append(f"queue {name!r}: cycle in the list")
                    break
                if not take_block(p, f"queue {name!r} item {n}"):
                    break
                if w[p + I_PREV] != prev:
                    problems.append(f"queue {name!r} item {n}: prev {w[p + I_PREV]} != {prev}")
                lens = w[p + I_LENS]
                kl, vl = lens & M32, lens >> 32
                if block_words(kl, vl) > w[p + I_BWORDS]:
                    problems.append(f"queue {name!r} item {n}: {kl}+{vl} bytes overflow block")
                if w[p + I_HASH] >> 32 != qidx:
                    problems.append(f"queue {name!r} item {n}: belongs to queue {qidx}")
                if mode:
                    o = (p + I_PAYLOAD) << 3
                    key = bytes(mm[o : o + kl])
                    if w[p + I_HASH] & M32 != zlib.crc32(key, seed):
                        problems.append(f"queue {name!r} item {n}: stale hash")
                    if key in keys:
                        problems.append(f"queue {name!r}: key {key!r} queued twice")
                    keys.add(key)
                    keyed_items.add(p)
                prev, p, n = p, w[p + I_NEXT], n + 1
            if w[base + Q_TAIL] != prev:
                problems.append(f"queue {name!r}: tail {w[base + Q_TAIL]} != last item {prev}")
            if queue_length(w, base) != n:
                problems.append(f"queue {name!r}: counters say {queue_length(w, base)} items, "
                                f"the list holds {n}")
            if limit and n > limit:
                problems.append(f"queue {name!r}: {n} items exceed size {limit}")

        for c in range(MAX_CLASS + 1):
            head = H_FREE + c if c < MAX_CLASS else H_LARGE
            p, n = w[head], 0
            while p:
                if n > max_steps:
                    problems.append(f"free list {c}: cycle")
                    break
                if not take_block(p, f"free list {c}"):
                    break
                cls = w[p + I_BWORDS] >> 1
                if (c < MAX_CLASS and cls != c) or (c == MAX_CLASS and cls < MAX_CLASS):
                    problems.append(f"free list {c}: block {p} of class {cls}")
                p, n = w[p + I_NEXT], n + 1

        pos = start
        for p in sorted(blocks):
            if p != pos:
                problems.append(f"heap: {'gap' if p > pos else 'overlap'} at word {min(p, pos)}")
            pos = p + blocks[p]
        if pos != bump:
            problems.append(f"heap: blocks end at {pos}, bump pointer is {bump}")

        bkt, mask = w[H_BKT], w[H_BMASK]
        indexed: set[int] = set()
        for b in range(mask + 1):
            x, n = w[bkt + b], 0
            while x:
                if x not in keyed_items:
                    problems.append(f"bucket {b}: {x} is not a queued item of a keyed queue")
                    break
                if x in indexed or n > max_steps:
                    problems.append(f"bucket {b}: {x} indexed twice")
                    break
                if w[x + I_HASH] & mask != b:
                    problems.append(f"bucket {b}: item {x} hashes elsewhere")
                indexed.add(x)
                x, n = w[x + I_HNEXT], n + 1
        for x in keyed_items - indexed:
            problems.append(f"index: item {x} missing")
    if problems:
        raise ArenaCorrupt(problems)
