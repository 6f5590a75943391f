"""The undo log (arena.py's docstring): every metadata word an operation overwrites is
recorded as (word index, old value) in the header first; the operation commits by zeroing
the log count, and whoever takes the lock and finds it non-zero rolls back.  These are
the slow paths' primitives: the hot paths in arena.py write the same steps out inline."""

from __future__ import annotations

from ..errors import ArenaClosed
from .compact import COMPACTING, compact
from .layout import H_LOG, H_LOGCNT, H_ROLLBACKS

# In the undo log count word (13): the arena's server stopped and closed it.  Odd, so never
# a log length, and not COMPACTING: every operation already reads that word right after
# taking the lock ("a dead holder's operation to roll back?"), so a closed arena costs the
# hot paths nothing; rollback() is where they notice it, and raise.
CLOSED_MARK = 3


def logged_write(w: memoryview, idx: int, val: int) -> None:
    """Record (idx, old value) in the undo log, then overwrite the word."""
    n = w[H_LOGCNT]
    w[H_LOG + n] = idx
    w[H_LOG + n + 1] = w[idx]
    w[H_LOGCNT] = n + 2
    w[idx] = val


def rollback(w: memoryview) -> None:
    """Undo an operation that did not commit (its process died or it raised), or finish a
    free-space compaction that its process did not (see compact.py)."""
    n = w[H_LOGCNT]
    if n == COMPACTING:
        compact(w)
        return
    if n == CLOSED_MARK:
        raise ArenaClosed("the arena was closed by its server, which stopped: attach the "
                          "arena of the server running now")
    # Counted before any word is restored, so that a lock-free reader that sees a restored
    # (lowered) word also sees the count move (x86 keeps stores in order: _LOCK_FREE_READS).
    w[H_ROLLBACKS] = w[H_ROLLBACKS] + 1
    for i in range(n - 2, -1, -2):
        w[w[H_LOG + i]] = w[H_LOG + i + 1]
    w[H_LOGCNT] = 0


def undo_failed(w: memoryview) -> None:
    """Undo what an operation that raised had logged; nothing when it raised because the
    arena is closed (the handler must go on to release the lock, not raise again)."""
    if w[H_LOGCNT] != CLOSED_MARK:
        rollback(w)
