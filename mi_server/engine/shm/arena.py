"""The shared-memory queue engine: queues in one mmap'ed file under /dev/shm, used directly
by every process that creates or attaches it.

Concurrency: one arena-wide lock, released by the kernel when its holder dies (lock.py: a
robust mutex in the header, or flock on the file). Crash safety: every metadata word an
operation overwrites is first recorded as (word index, old value) in the undo log in the
header; the operation commits by setting the log count to 0. Whoever takes the lock and
finds a non-zero count rolls the dead holder's operation back (restoring in reverse order,
then zeroing the count; doing it twice is harmless). Payload bytes and the header words of
a block that was free when the operation started need no logging: until the operation
commits nothing reachable points at them. An operation allocates at most one block, and
before it frees any, so it never writes unlogged into a block it freed itself.

Hot paths (unkeyed add and fetch) are written out inline with word access through
memoryview.cast('Q'): a Python call per word write would cost more than the lock pair.
"""

from __future__ import annotations

import logging
import mmap
import platform
import struct
import time
import zlib
from collections.abc import Callable, Sequence

from ..errors import UnknownQueue
from ..scriptlevel import ScriptLevel
from ..spec import QueueSpec
from ..stats import MemoryStats, QueueStats
from . import speedups
from .alloc import alloc, block_words, free
from .layout import (
    H_BKT,
    H_BMASK,
    H_BUMP,
    H_FREE,
    H_HEAP_END,
    H_LARGE,
    H_LOCK_KIND,
    H_LOG,
    H_LOGCNT,
    H_MAGIC,
    H_MUTEX,
    H_QTAB,
    H_ROLLBACKS,
    H_VERSION,
    I_ADDED,
    I_BWORDS,
    I_HASH,
    I_HNEXT,
    I_LENS,
    I_NEXT,
    I_PAYLOAD,
    I_PREV,
    ITEM_HEADER_BYTES,
    LOCK_MUTEX,
    M32,
    MAGIC,
    MAX_CLASS,
    Q_ADDED,
    Q_BASELINE,
    Q_DROP_MODE,
    Q_DROP_SIZE,
    Q_FETCHED,
    Q_HEAD,
    Q_LIMIT,
    Q_MODE,
    Q_SEED,
    Q_TAIL,
    Q_WORDS,
    VERSION,
    queue_length,
    read_specs,
)
from .lifecycle import ArenaFile
from .lock import lock_pair, track
from .memory import read_memory
from .undo import CLOSED_MARK, logged_write, rollback, undo_failed

_log = logging.getLogger("mqueue.engine")

# Lock-free size()/sizes(): a queue's length is added - fetched - dropped_size -
# dropped_addmode, four words that operations only ever increase, except a rollback (of a
# dead holder's uncommitted operation), which lowers them and first counts itself in
# H_ROLLBACKS.  Every operation makes the undo log count (word 13) non-zero before its
# first write and zero after its last.  So if the rollback count is the same before and
# after, and each counter reads the same in two passes, each counter held its value for
# the whole time between the passes; if the log count read between the passes is zero, no
# operation was half-done at that instant: the values were a committed state together.
# Otherwise the read takes the lock (and rolls back a dead holder's operation).  It relies
# on loads not being reordered with loads and stores with stores, which x86 guarantees
# (TSO) and weaker CPUs do not: there every read takes the lock.  It spares a size request
# two lock calls (size: ~0.3 us warm instead of ~1.4 with flock).
_LOCK_FREE_READS = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# four consecutive words as one tuple, one C call: size() reads a queue's four counters
# with it, ~100 ns less than a memoryview slice and .tolist(); each word is read whole
# (a native unpacker copies it), as memoryview indexing reads it
_counters_at = struct.Struct("4Q").unpack_from  # native, as the memoryview cast("Q")


def compiled_pop_plain() -> Callable[[memoryview, int], tuple[str, str] | None] | None:
    """The compiled `Arena._pop_plain_py` (speedups.py: _pop_plain_py's exact writes, ~15x
    quicker), unless it was not built or is turned off."""
    module = speedups.load()
    return None if module is None else module.pop_plain


_ENC = "utf-8"
_ERR = "surrogatepass"  # any JSON string, lone surrogates included, round-trips


_HEADER = struct.Struct("<7Q")  # an item block's header words, I_NEXT .. I_ADDED
_now_ns = time.time_ns  # an item's I_ADDED: wall clock, comparable across processes
_COUNTERS = (Q_ADDED, Q_FETCHED, Q_DROP_SIZE, Q_DROP_MODE)  # QueueStats order
_COUNTER_NAMES = ("added", "fetched", "dropped_size", "dropped_addmode")

# The hot paths use these word indices as literals (a global lookup per use would cost
# more than the write itself); fail at import if the layout ever moves them.
_HOT_LITERALS = (
    (H_LOG, 16), (H_LOGCNT, 13), (H_BUMP, 7), (H_HEAP_END, 9), (H_FREE, 272), (H_LARGE, 12),
    (MAX_CLASS, 4096), (Q_HEAD, 0), (Q_TAIL, 1), (Q_ADDED, 2), (Q_FETCHED, 3),
    (Q_DROP_SIZE, 4), (Q_DROP_MODE, 5), (I_NEXT, 0), (I_PREV, 1), (I_LENS, 3),
    (I_BWORDS, 5), (I_ADDED, 6), (I_PAYLOAD, 7), (ITEM_HEADER_BYTES, 56), (Q_BASELINE, 9),
    (Q_WORDS, 13), (H_ROLLBACKS, 15),
)
assert all(a == b for a, b in _HOT_LITERALS), "layout changed: update the hot paths"


def _stats_of(r: list[int]) -> QueueStats:
    """QueueStats from a copied queue record (words Q_HEAD .. Q_WORDS-1); literal indices
    as in the hot paths: +2..+5 the counters, +9..+12 their baselines (Q_BASELINE)."""
    a, f, ds, dm = r[2], r[3], r[4], r[5]
    return QueueStats(a - f - ds - dm, a - r[9], f - r[10], ds - r[11], dm - r[12])


class Arena(ArenaFile, ScriptLevel):
    """Queues in a shared-memory file; see docs/ARCHITECTURE.md section 2.

    One Arena object per process (a forked child may keep using its parent's: a flock
    arena's fd is re-opened in the child). Not for concurrent use by several threads of
    one process (they would share one flock, and one undo log in progress); attach one
    Arena per thread instead.
    """

    # ---- lifecycle --------------------------------------------------------------------

    def __init__(self, name: str, path: str, fd: int, mm: mmap.mmap) -> None:
        self.name = name
        self._path = path
        self._fd = fd
        self._mm = mm
        self._w = memoryview(mm).cast("Q")
        w = self._w
        try:
            if w[H_MAGIC] != MAGIC or w[H_VERSION] != VERSION:
                raise ValueError(f"{path} is not a ready mqueue arena of layout {VERSION}")
            try:
                self._specs = read_specs(mm, w)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path} is not a ready mqueue arena: unreadable queue "
                                 f"definitions ({e})") from None
            self._lock_kind = w[H_LOCK_KIND]
            # zero-argument C calls, bound once: the hot paths call them directly
            self._acquire, self._release = lock_pair(self._lock_kind, fd, w, path)
        except BaseException:
            self._w.release()  # so that the caller can close the mapping
            raise
        qtab = w[H_QTAB]
        # name -> (record base, index, size limit, addmode, crc seed); immutable after create
        self._queues: dict[str, tuple[int, int, int, int, int]] = {}
        for i, spec in enumerate(self._specs):
            base = qtab + i * Q_WORDS
            limit, mode, seed = w[base + Q_LIMIT], w[base + Q_MODE], w[base + Q_SEED]
            self._queues[spec.name] = (base, i, limit, mode, seed)
        self._names = list(self._queues)  # definition order
        self._bases = [v[0] for v in self._queues.values()]
        # sizes(): the four counters (words 2-5) of every queue record in one struct read
        # (the other words skipped as padding); each queue's first counter's index in it
        # and its name, in the order sizes() lists them
        self._qtab_at = qtab << 3
        gap, count = (Q_WORDS - 6) * 8, len(self._specs)
        layout = f"16x4Q{gap}x" * (count - 1) + "16x4Q" if count else ""
        self._read_qtab = struct.Struct(layout).unpack_from
        self._listed = [(i * 4, n) for i, n in reversed(list(enumerate(self._names)))]
        self._bkt = w[H_BKT]
        self._bmask = w[H_BMASK]
        # "$mqk/$mqv": the last item fetched by this process, per queue (as OpenSIPS)
        self._last: dict[str, tuple[str, str]] = {}
        # the rollback count when a fetch_pending, not yet settled, took its item; else None
        self._pending: int | None = None
        # what fetch_many_pending holds: (queue base, keyed, count, head, fetched count)
        self._pending_many: tuple[int, bool, int, int, int] | None = None
        compiled = compiled_pop_plain()
        if compiled is not None:
            # an instance attribute, so that self._pop_plain(w, base) calls it as the
            # method is called, without binding
            self._pop_plain = compiled  # type: ignore[method-assign]
        track(self)

    def take_all_and_close(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every queue's items (definition order, oldest first) read and the arena closed in
        one hold of the lock: any other process's operation happened before the copy, or
        fails with ArenaClosed after it.  Nothing is removed (the arena can be opened again
        and renamed aside if the copy cannot be placed).  What adopting a dead server's
        arena does, after check_invariants."""
        w = self._w
        self._acquire()
        try:
            if w[H_LOGCNT]:
                rollback(w)  # ArenaClosed when it is closed already
            out = []
            for name, (base, *_rest) in self._queues.items():
                items = []
                p = w[base + Q_HEAD]
                while p:
                    items.append(self._read_item(p))
                    p = w[p + I_NEXT]
                out.append((name, items))
            w[H_LOGCNT] = CLOSED_MARK
            return out
        finally:
            self._release()

    def specs(self) -> list[QueueSpec]:
        return list(self._specs)

    def _queue(self, q: str) -> tuple[int, int, int, int, int]:
        try:
            return self._queues[q]
        except KeyError:
            raise UnknownQueue(q) from None

    # ---- add ----------------------------------------------------------------------------

    def add(self, q: str, key: str, value: str) -> None:
        """Queue (key, value) per the queue's addmode and size. UnknownQueue / ArenaFull."""
        try:
            base, qidx, limit, mode, seed = self._queues[q]
        except KeyError:
            raise UnknownQueue(q) from None
        kb = key.encode(_ENC, _ERR)
        vb = value.encode(_ENC, _ERR)
        if mode:
            self._add_keyed(base, qidx, limit, mode, seed, kb, vb)
            return
        # Hot path, written out with literal word indices (see _HOT_LITERALS): 16.. undo
        # log, 13 log count, 7 bump, 9 heap end, 272+c free lists; queue +1 tail, +2 added.
        kl = len(kb)
        vl = len(vb)
        nwords = ((56 + kl + vl + 15) >> 4) << 1
        w = self._w
        self._acquire()
        try:
            if w[13]:
                rollback(w)
            c = nwords >> 1
            p = w[272 + c] if c < 4096 else 0
            t = w[base + 1]
            a = w[base + 2]
            if p:  # a free block of exactly this class
                nf = w[p]
                w[16] = 272 + c
                w[17] = p
                w[18] = p  # the block's free-list link, overwritten by the header below
                w[19] = nf
                w[20] = t if t else base  # old tail's next, or the empty queue's head
                w[21] = 0
                w[22] = base + 1
                w[23] = t
                w[24] = base + 2
                w[25] = a
                w[13] = 10
                w[272 + c] = nf
            else:
                p = w[7]
                if p + nwords > w[9]:  # heap exhausted: bigger blocks or ArenaFull
                    self._append(w, base, qidx, limit, 0, kb, vb)
                    w[13] = 0
                    return
                w[16] = 7
                w[17] = p
                w[18] = t if t else base
                w[19] = 0
                w[20] = base + 1
                w[21] = t
                w[22] = base + 2
                w[23] = a
                w[13] = 8
                w[7] = p + nwords
            o = p << 3
            self._mm[o : o + 56 + kl + vl] = (
                _HEADER.pack(0, t, 0, kl | vl << 32, qidx << 32, nwords, _now_ns()) + kb + vb
            )
            w[t if t else base] = p
            w[base + 1] = p
            w[base + 2] = a + 1
            if limit and a + 1 - w[base + 3] - w[base + 4] - w[base + 5] > limit:
                self._evict(w, base, limit, False)
            w[13] = 0
        except BaseException:
            if w[13]:
                undo_failed(w)
            raise
        finally:
            self._release()

    def _add_keyed(
        self, base: int, qidx: int, limit: int, mode: int, seed: int, kb: bytes, vb: bytes
    ) -> None:
        """addmode 1 (keep oldest) / 2 (keep newest): the hash index finds the same key."""
        hh = zlib.crc32(kb, seed) | qidx << 32
        with self._locked() as w:
            old = self._find(w, hh, kb)
            if old and mode == 1:
                logged_write(w, base + Q_ADDED, w[base + Q_ADDED] + 1)
                logged_write(w, base + Q_DROP_MODE, w[base + Q_DROP_MODE] + 1)
                return
            self._append(w, base, qidx, limit, hh, kb, vb, old)

    def _append(
        self, w: memoryview, base: int, qidx: int, limit: int, hh: int, kb: bytes,
        vb: bytes, replace: int = 0,
    ) -> None:
        """The general add, every word logged: allocate, fill, (unlink `replace`), link at
        the tail, index (hh != 0 means keyed), evict. Allocation comes first so the new
        block can never be the one `replace` frees."""
        kl, vl = len(kb), len(vb)
        p = alloc(w, block_words(kl, vl))
        logged_write(w, p + I_NEXT, 0)
        w[p + I_LENS] = kl | vl << 32
        w[p + I_HASH] = hh if hh else qidx << 32
        w[p + I_ADDED] = _now_ns()
        o = (p + I_PAYLOAD) << 3
        self._mm[o : o + kl + vl] = kb + vb
        if replace:
            self._unlink(w, base, replace, True)
            logged_write(w, base + Q_DROP_MODE, w[base + Q_DROP_MODE] + 1)
        t = w[base + Q_TAIL]
        w[p + I_PREV] = t
        if hh:
            bidx = self._bkt + (hh & self._bmask)
            w[p + I_HNEXT] = w[bidx]
            logged_write(w, bidx, p)
        logged_write(w, t + I_NEXT if t else base + Q_HEAD, p)
        logged_write(w, base + Q_TAIL, p)
        logged_write(w, base + Q_ADDED, w[base + Q_ADDED] + 1)
        if limit and queue_length(w, base) > limit:
            self._evict(w, base, limit, bool(hh))

    def _find(self, w: memoryview, hh: int, kb: bytes) -> int:
        """The queued item of this queue with key kb, or 0 (hh = crc | queue index << 32)."""
        kl = len(kb)
        mm = self._mm
        x = w[self._bkt + (hh & self._bmask)]
        while x:
            if w[x + I_HASH] == hh and w[x + I_LENS] & M32 == kl:
                o = (x + I_PAYLOAD) << 3
                if mm[o : o + kl] == kb:
                    return x
            x = w[x + I_HNEXT]
        return 0

    def _unhash(self, w: memoryview, p: int) -> None:
        prev = self._bkt + (w[p + I_HASH] & self._bmask)
        x = w[prev]
        while x != p:
            prev = x + I_HNEXT
            x = w[prev]
        logged_write(w, prev, w[p + I_HNEXT])

    def _unlink(self, w: memoryview, base: int, p: int, keyed: bool) -> None:
        """Take item p out of its queue (and the index) and free its block; logged."""
        nx, pv = w[p + I_NEXT], w[p + I_PREV]
        logged_write(w, pv + I_NEXT if pv else base + Q_HEAD, nx)
        logged_write(w, nx + I_PREV if nx else base + Q_TAIL, pv)
        if keyed:
            self._unhash(w, p)
        free(w, p)

    def _evict(self, w: memoryview, base: int, limit: int, keyed: bool) -> None:
        while queue_length(w, base) > limit:
            self._unlink(w, base, w[base + Q_HEAD], keyed)
            logged_write(w, base + Q_DROP_SIZE, w[base + Q_DROP_SIZE] + 1)

    # ---- fetch --------------------------------------------------------------------------

    def _read_item(self, p: int) -> tuple[str, str]:
        lens = self._w[p + I_LENS]
        kl = lens & M32
        o = (p + I_PAYLOAD) << 3
        mm = self._mm
        return (
            mm[o : o + kl].decode(_ENC, _ERR),
            mm[o + kl : o + kl + (lens >> 32)].decode(_ENC, _ERR),
        )

    def _pop(self, w: memoryview, base: int, keyed: bool) -> tuple[str, str] | None:
        """Remove the head item (logged, not committed); None when empty."""
        p = w[base + Q_HEAD]
        if not p:
            return None
        item = self._read_item(p)
        self._unlink(w, base, p, keyed)
        logged_write(w, base + Q_FETCHED, w[base + Q_FETCHED] + 1)
        return item

    def _pop_plain_py(self, w: memoryview, base: int) -> tuple[str, str] | None:
        """`_pop` for an unkeyed queue (addmode 0), written out: remove the head item, its
        writes logged and NOT committed (word 13 is left at 10); (key, value), or None
        (nothing logged) when the queue is empty.  Lock held by the caller.  An instance
        uses the compiled version of this instead where it was built (see
        compiled_pop_plain)."""
        # Literal word indices (see add): queue +0 head, +1 tail, +3 fetched; item +0 next,
        # +1 prev, +3 lengths, +5 block words, +7 payload; 12 large list, 16.. the log.
        p = w[base]
        if not p:
            return None
        lens = w[p + 3]
        kl = lens & 0xFFFFFFFF
        o = (p + 7) << 3
        mm = self._mm
        kb = mm[o : o + kl]
        vb = mm[o + kl : o + kl + (lens >> 32)]
        nx = w[p]
        c = w[p + 5] >> 1
        fh = 272 + c if c < 4096 else 12
        f = w[base + 3]
        fold = w[fh]
        w[16] = base
        w[17] = p
        w[18] = nx + 1 if nx else base + 1  # next item's prev, or the tail: both were p
        w[19] = p
        w[20] = base + 3
        w[21] = f
        w[22] = p  # the freed block's first word becomes its free-list link
        w[23] = nx
        w[24] = fh
        w[25] = fold
        w[13] = 10
        w[base] = nx
        w[nx + 1 if nx else base + 1] = 0
        w[base + 3] = f + 1
        w[p] = fold
        w[fh] = p
        return kb.decode(_ENC, _ERR), vb.decode(_ENC, _ERR)

    _pop_plain = _pop_plain_py  # an instance's own attribute when compiled: see __init__

    def _take(self, q: str) -> tuple[str, str] | None:
        """The lock taken (a dead holder's operation rolled back) and the head item of q
        removed, logged and NOT committed: the caller commits or rolls back, and releases
        the lock.  None: the queue is empty (nothing logged, the lock still held).  When
        it raises, nothing is left logged and the lock is released.  UnknownQueue.  (The
        hot paths' lock, taken as in _records, not through _locked().)"""
        try:
            base, _qidx, _limit, mode, _seed = self._queues[q]
        except KeyError:
            raise UnknownQueue(q) from None
        w = self._w
        self._acquire()
        try:
            if w[13]:  # a dead holder's operation, or a pending fetch never settled
                rollback(w)
            return self._pop(w, base, True) if mode else self._pop_plain(w, base)
        except BaseException:
            if w[13]:
                undo_failed(w)
            self._release()
            raise

    def fetch(self, q: str) -> tuple[str, str] | None:
        """Remove and return the oldest (key, value); None when empty. UnknownQueue."""
        item = self._take(q)
        self._w[13] = 0  # commit
        self._release()
        return item

    # ---- a fetch left pending ---------------------------------------------------------
    # For a caller that must know the item can be delivered before the fetch counts:
    # mi_fifo's compiled path removes the item, opens the reply FIFO, and only then
    # commits (or, when the FIFO cannot be opened, puts the item back).  The client is
    # then woken once, with its reply ready, instead of once by the open and again by the
    # reply; nobody sees the removal before it is committed, since the lock stays held
    # and lock-free readers take the lock while the undo log is busy.

    def fetch_pending(self, q: str) -> tuple[str, str] | None:
        """`fetch` with the removal left pending: the item is returned with the arena lock
        still held and its removal logged but not committed.  `settle(True)` commits it,
        `settle(False)` puts the item back as it was.  Until then every other process
        waits for the lock, so the caller must settle at once, with nothing between that
        can block; and this process must use the arena for nothing else (another
        operation, another fetch_pending included, would undo the removal, which
        `settle(True)` then reports).  A process that dies before it settles, or closes the
        arena, is rolled back by the next locker, as any unfinished operation is.  None when
        the queue is empty (nothing pending, lock released).  UnknownQueue."""
        item = self._take(q)
        if self._pending is not None:  # _take undid it: its settle will say so
            self._pending = None
            _log.error("a pending fetch was never settled: it is undone")
        if item is None:
            self._release()
            return None
        # the rollback count: if it moves before settle, an operation of this process ran
        # in between and undid the removal (any operation taking the lock rolls back a
        # busy undo log, and counts it)
        self._pending = self._w[15]
        return item

    def settle(self, commit: bool) -> None:
        """End what `fetch_pending` left pending: commit the removal (True) or undo it
        (False); the lock is released either way.  With nothing pending it does nothing,
        so calling it again is harmless.  RuntimeError (lock released, item still queued)
        when another operation of this process undid the removal in between.  It settles
        whatever this arena has pending, not one particular fetch: a caller that missed
        its turn must not call it later."""
        pending, self._pending = self._pending, None
        if pending is None:
            if self._pending_many is not None:
                self._settle_many(commit)
            return
        w = self._w
        try:
            if w[15] != pending:
                raise RuntimeError("the pending fetch was undone before it was settled")
            if commit:
                w[13] = 0
            else:
                rollback(w)
        finally:
            self._release()

    def fetch_many_pending(self, q: str, limit: int) -> list[tuple[str, str]]:
        """`fetch_many` whose removal counts only once `settle(True)` commits it (the
        bulk form of fetch_pending, same rules: the lock stays held until settle, so
        settle at once and run nothing else of this arena in between).  The items are
        read, not yet removed: settle(True) removes them, each committing on its own as
        in fetch_many; settle(False) leaves the queue exactly as it was.  A process that
        dies before it settles has changed nothing.  [] when the queue is empty (nothing
        held, lock released).  UnknownQueue."""
        base, _qidx, _limit, mode, _seed = self._queue(q)
        w = self._w
        self._acquire()
        try:
            if w[13]:  # a dead holder's operation, or a pending fetch never settled
                rollback(w)
            if self._pending is not None:
                self._pending = None
                _log.error("a pending fetch was never settled: it is undone")
            items: list[tuple[str, str]] = []
            p = head = w[base + Q_HEAD]
            while p and len(items) < limit:
                items.append(self._read_item(p))
                p = w[p + I_NEXT]
        except BaseException:
            self._release()
            raise
        if not items:
            self._release()
            return items
        self._pending_many = (base, bool(mode), len(items), head, w[base + Q_FETCHED])
        return items

    def _settle_many(self, commit: bool) -> None:
        """settle() for fetch_many_pending: remove the items read (True), or nothing."""
        many, self._pending_many = self._pending_many, None
        assert many is not None
        base, keyed, count, head, fetched = many
        w = self._w
        try:
            if w[base + Q_HEAD] != head or w[base + Q_FETCHED] != fetched:
                raise RuntimeError("the queue changed before the pending fetch was settled")
            if commit:
                for _ in range(count):
                    self._pop(w, base, keyed)
                    w[H_LOGCNT] = 0  # commit this item
        except BaseException:
            if w[H_LOGCNT]:
                rollback(w)
            raise
        finally:
            self._release()

    def fetch_many(self, q: str, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` items, oldest first, in one locked step. UnknownQueue.

        Each item commits on its own, so a crash mid-way loses only what was already
        taken by the dead process (as if it had fetched them one by one)."""
        base, _qidx, _limit, mode, _seed = self._queue(q)
        out: list[tuple[str, str]] = []
        with self._locked() as w:
            while len(out) < limit:
                item = self._pop(w, base, bool(mode))
                if item is None:
                    break
                w[H_LOGCNT] = 0  # commit this item
                out.append(item)
        return out

    # ---- reading ------------------------------------------------------------------------
    # size / sizes read lock-free where they can (see _LOCK_FREE_READS); their fallback and
    # stats take the lock in _records as the hot paths do, not through _locked(): the
    # @contextmanager's generator and its enter/exit cost about as much as a flock pair
    # itself. They write nothing, so there is nothing to commit; a dead holder's operation
    # is still rolled back first, so they only ever see committed state.
    # Literal word indices as in add: 13 log count; queue +2 added, +3 fetched,
    # +4 dropped by size, +5 dropped by addmode (queue_length written out).

    def _records(self, bases: Sequence[int]) -> list[list[int]]:
        """Copies of queue records, read under the lock once a dead holder's operation is
        rolled back. Read-only, so there is nothing to commit or undo afterwards; a plain
        try/finally because a @contextmanager would cost more than the reads."""
        w = self._w
        self._acquire()
        try:
            if w[13]:
                rollback(w)
            return [w[b : b + 13].tolist() for b in bases]  # 13 == Q_WORDS
        finally:
            self._release()

    def _counters(self, bases: Sequence[int]) -> list[list[int]]:
        """[added, fetched, dropped by size, dropped by addmode] of each queue record: read
        lock-free where _LOCK_FREE_READS holds (the counters twice, a quiet undo log between
        the passes and no rollback during them: word 15 counts rollbacks), else, or when a
        writer was busy (or died), under the lock."""
        if _LOCK_FREE_READS:
            w = self._w
            rollbacks = w[15]
            first = [w[b + 2 : b + 6].tolist() for b in bases]
            if (not w[13] and first == [w[b + 2 : b + 6].tolist() for b in bases]
                    and w[15] == rollbacks):
                return first
        return [r[2:6] for r in self._records(bases)]

    def size(self, q: str) -> int:
        try:
            base = self._queues[q][0]
        except KeyError:
            raise UnknownQueue(q) from None
        if _LOCK_FREE_READS:
            # _counters' lock-free read for one queue, written out: this is mq_get_size's
            # whole engine cost, and the general helper's lists and call would double it.
            # A change to the proof must be made in both.
            w = self._w
            rollbacks = w[15]
            at = (base + 2) << 3
            first = _counters_at(self._mm, at)
            if not w[13] and first == _counters_at(self._mm, at) and w[15] == rollbacks:
                added, fetched, dropped_size, dropped_mode = first
                return added - fetched - dropped_size - dropped_mode
        a, f, ds, dm = self._counters((base,))[0]
        return a - f - ds - dm

    def sizes(self) -> list[tuple[str, int]]:
        """(name, size) for every queue, in REVERSE definition order (as OpenSIPS lists)."""
        if _LOCK_FREE_READS:
            # _counters' lock-free read, written out with one struct read of every queue's
            # counters per pass: _counters' memoryview slices and lists cost 2-3x more
            # (~6.6 us for 5 queues here), mq_get_sizes' whole engine cost.
            # A change to the proof must be made in all three.
            w, mm, at = self._w, self._mm, self._qtab_at
            rollbacks = w[15]
            first = self._read_qtab(mm, at)
            if not w[13] and first == self._read_qtab(mm, at) and w[15] == rollbacks:
                return [(name, first[i] - first[i + 1] - first[i + 2] - first[i + 3])
                        for i, name in self._listed]
        counters = self._counters(self._bases)
        return [(name, a - f - ds - dm) for name, (a, f, ds, dm)
                in zip(reversed(self._names), reversed(counters), strict=True)]

    def snapshot(self, q: str) -> list[tuple[str, str]]:
        """Every queued (key, value), oldest first; nothing removed."""
        base = self._queue(q)[0]
        out = []
        with self._locked() as w:
            p = w[base + Q_HEAD]
            while p:
                out.append(self._read_item(p))
                p = w[p + I_NEXT]
        return out

    def stats(self) -> dict[str, QueueStats]:
        """Every queue's counters and the time its oldest item was added, one locked read."""
        w = self._w
        self._acquire()
        try:
            if w[13]:
                rollback(w)
            records = [w[b : b + 13].tolist() for b in self._bases]  # 13 == Q_WORDS
            added_at = [w[r[0] + I_ADDED] if r[0] else 0 for r in records]  # r[0]: head
        finally:
            self._release()
        out = {}
        for name, r, t in zip(self._names, records, added_at, strict=True):
            st = _stats_of(r)
            st.oldest_added_ns = t
            out[name] = st
        return out

    def memory(self) -> MemoryStats:
        """The allocator's figures (the shmem: statistics), read under the lock."""
        w = self._w
        self._acquire()
        try:
            if w[13]:
                rollback(w)
            live = sum(queue_length(w, b) for b in self._bases)
            return read_memory(w, live)
        finally:
            self._release()

    def reset_stats(self, q: str | None = None, counter: str | None = None) -> None:
        """Zero added/fetched/dropped_* (or only `counter`, one of those QueueStats field
        names) of one queue or all; size is the queue itself and is never reset. The
        counters keep running, their baselines move to the current values."""
        bases = [self._queue(q)[0]] if q is not None else self._bases
        if counter is None:
            which = list(enumerate(_COUNTERS))
        elif counter in _COUNTER_NAMES:
            i = _COUNTER_NAMES.index(counter)
            which = [(i, _COUNTERS[i])]
        else:
            raise ValueError(f"no resettable counter {counter!r}")
        with self._locked() as w:
            for b in bases:
                for i, c in which:
                    logged_write(w, b + Q_BASELINE + i, w[b + c])
                w[H_LOGCNT] = 0  # commit per queue: the log holds a bounded number of words

    def check_invariants(self) -> None:
        """Walk the whole arena under the lock; raise ArenaCorrupt listing what is wrong."""
        from .invariants import check_invariants

        check_invariants(self)

    # ---- for compiled readers (mi_server/mi/compiled.py) --------------------------------

    def native_view(self) -> tuple[memoryview, list[tuple[bytes, int, int]], int, bool] | None:
        """What code that works on this arena's words directly needs, in this process: the
        words (released when the arena closes), each queue's (name as UTF-8, record base,
        addmode) in definition order, the word index of the arena mutex (-1 under flock,
        which only this object can take) and whether sizes may be read without the lock
        (_LOCK_FREE_READS).  Such code must make exactly the reads and writes this class
        makes (engine/shm/native.h).  None when the arena is closed in this process."""
        if self.closed:
            return None
        queues = [(name.encode(_ENC, _ERR), base, mode)
                  for name, (base, _i, _limit, mode, _seed) in self._queues.items()]
        mutex = H_MUTEX if self._lock_kind == LOCK_MUTEX else -1
        return self._w, queues, mutex, _LOCK_FREE_READS

    # ---- introspection used by benchmarks and checks ----------------------------------

    def used_bytes(self) -> int:
        """Heap bytes taken from the bump pointer (live items + free blocks)."""
        from .layout import H_HEAP_START

        with self._locked() as w:
            return (w[H_BUMP] - w[H_HEAP_START]) * 8
