"""Where everything lives in the arena file: word indices of the header, queue records,
hash buckets and item blocks, and the code that lays out a fresh arena.

Everything is addressed in 8-byte words (memoryview.cast('Q')); a pointer is a word index
and 0 means null (word 0 is the magic, so no item can live there). Blocks are multiples
of 16 bytes (2 words) and never move.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..spec import QueueSpec

MAGIC = 0x3145554555514D4D  # "MMQUEUE1" little-endian; written last at creation
VERSION = 4  # 2: the lock kind and the mutex words; 3: the owner's pid and start time;
# 4: I_ADDED (each item's add time), H_PEAK_BUMP

# header words
H_MAGIC = 0
H_VERSION = 1
H_SIZE = 2  # arena size in bytes
H_NQ = 3  # number of queues
H_QTAB = 4  # word index of the queue table
H_BKT = 5  # word index of the hash bucket table
H_BMASK = 6  # number of buckets - 1 (power of two)
H_BUMP = 7  # next never-used heap word (bump allocator)
H_HEAP_START = 8
H_HEAP_END = 9  # one past the last usable heap word
H_SPECS = 10  # byte offset of the JSON queue definitions
H_SPECS_LEN = 11
H_LARGE = 12  # free list of blocks too big for a size class (first fit)
H_LOGCNT = 13  # words used in the undo log; != 0 means an operation did not commit
H_FREED_MARK = 14  # item frees counted at the last free-space compaction (compact.py)
H_ROLLBACKS = 15  # rollbacks so far: lock-free readers detect one between their passes
H_LOG = 16  # undo log: (word index, old value) pairs
LOG_WORDS = 256  # 128 entries; the longest operation logs about 30
H_FREE = H_LOG + LOG_WORDS  # free-list heads by size class (class c = blocks of 16*c bytes)
MAX_CLASS = 4096  # classes cover blocks below 64 KiB; bigger ones go to H_LARGE
# the arena lock (lock.py): LOCK_FLOCK, flock on the file, or LOCK_MUTEX, the robust
# process-shared mutex in the MUTEX_WORDS words at H_MUTEX, whose binary layout (the C
# library's) H_LOCK_ABI names; chosen at creation
H_LOCK_KIND = H_FREE + MAX_CLASS
H_LOCK_ABI = H_LOCK_KIND + 1
H_MUTEX = H_LOCK_ABI + 1
MUTEX_WORDS = 8  # 64 bytes: a pthread_mutex_t fits (checked when the C code is built)
# the server that owns the arena (Arena.create writes the creating process): its pid and
# its start time in clock ticks since boot (/proc/<pid>/stat field 22), so that a reused
# pid is not taken for the owner when a later server decides whether to adopt the arena
H_OWNER_PID = H_MUTEX + MUTEX_WORDS
H_OWNER_START = H_OWNER_PID + 1
# the highest the bump pointer has been before a free-space compaction lowered it (the
# shmem:max_used_size statistic: nothing on the add path, compaction records it)
H_PEAK_BUMP = H_OWNER_START + 1
HEADER_WORDS = H_PEAK_BUMP + 1
LOCK_FLOCK, LOCK_MUTEX = 0, 1

# queue record words (relative to the record's base). The counters are all-time totals;
# the queue's length is derived (added - fetched - dropped_size - dropped_addmode), so an add
# or a fetch logs one counter word, not two. reset_stats moves the baselines instead.
Q_HEAD = 0
Q_TAIL = 1
Q_ADDED = 2
Q_FETCHED = 3
Q_DROP_SIZE = 4
Q_DROP_MODE = 5
Q_LIMIT = 6  # size limit; 0 = unlimited
Q_MODE = 7  # effective addmode
Q_SEED = 8  # crc32 seed for keys of this queue
Q_BASELINE = 9  # 4 words: the counters' values at the last reset_stats
Q_WORDS = 13

# item block words (relative to the block's first word); payload = key bytes + value bytes
I_NEXT = 0  # toward the tail; in a free block: the next free block
I_PREV = 1  # toward the head
I_HNEXT = 2  # next item in the same hash bucket (keyed queues only)
I_LENS = 3  # key length | value length << 32
I_HASH = 4  # crc32(key, seed) | queue index << 32
I_BWORDS = 5  # block size in words (kept in free blocks too)
I_ADDED = 6  # time.time_ns() when the item was added: the age of a queue's oldest item
I_PAYLOAD = 7
ITEM_HEADER_BYTES = I_PAYLOAD * 8  # 56; with the 16-byte rounding, <= 71 bytes overhead

M32 = 0xFFFFFFFF


def bucket_count(arena_size: int, keyed: bool) -> int:
    """A power of two >= one bucket per 128 arena bytes (each item takes >= 64), so chains
    stay short (load factor <= 2) at any fill; 1 when no queue is keyed."""
    if not keyed:
        return 1
    n = 1
    while n * 128 < arena_size:
        n <<= 1
    return n


MIN_HEAP_WORDS = 64  # an arena must have room for at least this much heap


def _specs(queues: Sequence[QueueSpec]) -> bytes:
    return json.dumps([[q.name, q.size, q.addmode, q.dbmode] for q in queues]).encode()


def _offsets(specs_len: int, nqueues: int, nbkt: int) -> tuple[int, int, int]:
    """Word indexes of the queue table, the bucket table and the heap."""
    qtab = (HEADER_WORDS * 8 + specs_len + 15) // 16 * 2
    bkt = qtab + Q_WORDS * nqueues
    bkt += bkt & 1
    heap = bkt + nbkt
    heap += heap & 1
    return qtab, bkt, heap


def minimum_size(queues: Sequence[QueueSpec]) -> int:
    """The smallest arena size in bytes (a multiple of 16) that `layout` accepts for
    `queues`: the header (the lock, the undo log, the free lists), the definitions, the
    queue and bucket tables, and MIN_HEAP_WORDS of heap.  (The bucket table grows with
    the size, so the smallest size is found by iterating up to the fixed point.)"""
    specs_len = len(_specs(queues))
    keyed = any(q.effective_addmode in (1, 2) for q in queues)
    size = 0
    while True:
        heap = _offsets(specs_len, len(queues), bucket_count(size, keyed))[2]
        need = (heap + MIN_HEAP_WORDS) * 8
        need += -need % 16
        if need <= size:
            return size
        size = need


def layout(words: memoryview, buf, size: int, queues: Sequence[QueueSpec],
           lock_kind: int = LOCK_FLOCK, owner: tuple[int, int] = (0, 0)) -> None:
    """Write a fresh arena's header, definitions, queue table and empty heap into `words`
    (a zeroed 'Q' view of the mapping `buf`), for the lock `lock_kind` (its mutex, if
    any, is initialised by the caller), owned by `owner` (pid, start time). The magic is
    written last, so an attacher never
    sees a half-built arena."""
    import zlib

    specs = _specs(queues)
    keyed = any(q.effective_addmode in (1, 2) for q in queues)
    nbkt = bucket_count(size, keyed)
    specs_off = HEADER_WORDS * 8
    qtab, bkt, heap = _offsets(len(specs), len(queues), nbkt)
    end = size // 16 * 2
    if end - heap < MIN_HEAP_WORDS:
        raise ValueError(f"arena size {size} too small: the layout alone needs {heap * 8} bytes")
    buf[specs_off : specs_off + len(specs)] = specs
    for i, q in enumerate(queues):
        base = qtab + i * Q_WORDS
        words[base + Q_LIMIT] = max(q.size, 0)
        words[base + Q_MODE] = q.effective_addmode
        words[base + Q_SEED] = zlib.crc32(i.to_bytes(4, "little"))
    words[H_VERSION] = VERSION
    words[H_SIZE] = size
    words[H_NQ] = len(queues)
    words[H_QTAB] = qtab
    words[H_BKT] = bkt
    words[H_BMASK] = nbkt - 1
    words[H_BUMP] = heap
    words[H_HEAP_START] = heap
    words[H_HEAP_END] = end
    words[H_SPECS] = specs_off
    words[H_SPECS_LEN] = len(specs)
    words[H_LOCK_KIND] = lock_kind
    words[H_OWNER_PID], words[H_OWNER_START] = owner
    words[H_MAGIC] = MAGIC


def read_specs(buf, words: memoryview) -> list[QueueSpec]:
    off, n = words[H_SPECS], words[H_SPECS_LEN]
    return [QueueSpec(name, size, addmode, dbmode) for name, size, addmode, dbmode in
            json.loads(bytes(buf[off : off + n]))]


# Two readings of these words shared by the allocator (arena.py), the free-space
# compaction (compact.py, which arena imports, so they cannot live in arena.py) and the
# invariant checker: one definition, so the three can never disagree.

def free_list_head(w: memoryview, p: int) -> int:
    """The header word heading the free list that block p belongs on (by its size)."""
    c = w[p + I_BWORDS] >> 1
    return H_FREE + c if c < MAX_CLASS else H_LARGE


def queue_length(w: memoryview, base: int) -> int:
    """Items queued: every successful add minus every way out."""
    return w[base + Q_ADDED] - w[base + Q_FETCHED] - w[base + Q_DROP_SIZE] - w[base + Q_DROP_MODE]
