"""An arena file's life: create or attach /dev/shm/<name>, map it, close it for every
process (its server stopping), the owner lock that keeps two servers from adopting it,
rename, unmap, unlink, a forked child's own descriptor; and the lock held around the slow
paths.  Arena (arena.py) adds the queue operations on top."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ArenaClosed
from ..spec import QueueSpec
from .layout import (
    H_LOGCNT,
    H_OWNER_PID,
    H_OWNER_START,
    HEADER_WORDS,
    LOCK_MUTEX,
    layout,
    minimum_size,
)
from .lock import CLOSED, init_lock, lock_pair, new_lock_kind, reopen
from .undo import CLOSED_MARK, rollback, undo_failed

if TYPE_CHECKING:
    from typing import Self

SHM_DIR = "/dev/shm"


def shm_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad arena name {name!r}: one path component under {SHM_DIR}")
    return os.path.join(SHM_DIR, name)


def process_start_time(pid: int) -> int:
    """The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field
    22), which tells a reused pid from the process that had it; 0 when there is no such
    process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # the command name (field 2) is in parentheses and may hold anything, ")" included
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


# struct flock for F_OFD_SETLK: a write lock on byte 0 (l_pid must be 0 for OFD locks)
_OFD_WRITE_LOCK = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)


class ArenaFile:
    """The file, its mapping and its lock; what Arena's queue operations stand on.
    Arena.__init__ reads the header and sets the attributes used here."""

    name: str
    _path: str
    _fd: int
    _mm: mmap.mmap
    _w: memoryview
    _lock_kind: int
    _acquire: Any
    _release: Any
    _last: dict[str, tuple[str, str]]
    _pending: int | None
    _pending_many: Any

    @classmethod
    def create(cls, name: str, size: int, queues: Sequence[QueueSpec]) -> Self:
        """Create /dev/shm/<name> (it must not exist) holding `queues`, `size` bytes
        (rounded down to whole 16-byte blocks: the words are 8 bytes, blocks 16)."""
        requested, size = size, size - size % 16
        names = [q.name for q in queues]
        if len(set(names)) != len(names):
            raise ValueError("queue defined twice")
        least = minimum_size(queues)
        if size < least:  # refused before the file, the mapping or the lock are made
            raise ValueError(f"{requested} bytes is too small for an arena of "
                             f"{len(queues)} queue(s): it needs at least {least} bytes")
        path = shm_path(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            words = memoryview(mm).cast("Q")
            try:
                kind = new_lock_kind()
                init_lock(kind, words)  # before the magic: nobody can use it before
                pid = os.getpid()
                layout(words, mm, size, queues, kind, (pid, process_start_time(pid)))
            finally:
                words.release()
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return cls(name, path, fd, mm)

    @classmethod
    def attach(cls, name: str) -> Self:
        """Use an existing arena by name, from any process on the host."""
        path = shm_path(name)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size % 8 or size < HEADER_WORDS * 8:  # cannot even hold the header
                raise ValueError(f"{path} is not a ready mqueue arena ({size} bytes)")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                arena = cls(name, path, fd, mm)
            except ValueError:  # not an arena: __init__ released its view already
                mm.close()
                raise
        except BaseException:
            os.close(fd)
            raise
        if arena.closed:
            arena.close()
            raise ArenaClosed(f"{path}: the arena was closed by its server, which stopped")
        return arena

    @property
    def owner(self) -> tuple[int, int]:
        """(pid, start time) of the process that created the arena (its server)."""
        return self._w[H_OWNER_PID], self._w[H_OWNER_START]

    @property
    def closed(self) -> bool:
        """True once its server closed it (mark_closed): every operation raises ArenaClosed."""
        return self._w[H_LOGCNT] == CLOSED_MARK

    def mark_closed(self, closed: bool = True) -> None:
        """Close the arena for every process that uses it (its server, stopping cleanly,
        once it saved what it saves): from now on each operation of any process raises
        ArenaClosed, instead of working on queues that nobody serves any more.
        `closed=False` opens it again (an adoption that could not finish gives it back)."""
        w = self._w
        self._acquire()
        try:
            if w[H_LOGCNT] and w[H_LOGCNT] != CLOSED_MARK:
                rollback(w)  # a dead holder's operation: the state stays a committed one
            w[H_LOGCNT] = CLOSED_MARK if closed else 0
        finally:
            self._release()

    def hold_owner_lock(self) -> bool:
        """Take the owner lock of the arena file for as long as this process keeps the
        arena open: an OFD write lock (fcntl F_OFD_SETLK) on its first byte, which neither
        the arena lock (flock or the mutex) nor a forked child's re-opened descriptor
        shares, and which the kernel drops when this process dies.  A server starting
        adopts an arena only when it can take this lock, so two servers never adopt the
        same one.  False when another open file description holds it."""
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _OFD_WRITE_LOCK)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def file_identity(self) -> tuple[int, int]:
        """(device, inode) of the arena file this object maps."""
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def rename(self, name: str, replace: bool = True) -> None:
        """Give the arena file another name under /dev/shm, the name `attach` finds it by:
        replacing any file of that name, atomically, or with replace=False only where there
        is none (FileExistsError, and nothing changed, otherwise)."""
        path = shm_path(name)
        if replace:
            os.rename(self._path, path)
        else:
            os.link(self._path, path)  # no-clobber: EEXIST when the name is taken
            os.unlink(self._path)
        self.name, self._path = name, path

    def close(self) -> None:
        """Unmap in this process (the file and other processes are untouched)."""
        if self._fd < 0:
            return
        if self._pending is not None or self._pending_many is not None:
            # the lock is still ours: the next locker rolls back (a held bulk wrote nothing)
            self._pending = self._pending_many = None
            self._release()
        self._acquire, self._release = CLOSED
        self._w.release()
        self._mm.close()
        os.close(self._fd)
        self._fd = -1

    def unlink(self) -> None:
        """Remove the shm file; processes that still map it keep working."""
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def _after_fork_in_child(self) -> None:
        if self._fd >= 0:
            try:
                self._fd = reopen(self._fd, self._path)
                self._acquire, self._release = lock_pair(self._lock_kind, self._fd, self._w,
                                                         self._path)
            except OSError:
                # Keeping the parent's open file description would share its lock: in
                # this child the arena fails every operation, as a closed one does.
                os.close(self._fd)
                self._fd = -1
                self._acquire, self._release = CLOSED
        self._last = {}  # "the last item fetched by this process"
        self._pending = self._pending_many = None  # the parent's lock is not this child's

    @property
    def lock_kind(self) -> str:
        """"mutex" (the engine's compiled part) or "flock": see lock.py."""
        return "mutex" if self._lock_kind == LOCK_MUTEX else "flock"

    # ---- locking for the slow paths ---------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[memoryview]:
        """The lock held, a dead holder's operation rolled back; commit on exit."""
        w = self._w
        self._acquire()
        try:
            if w[H_LOGCNT]:
                rollback(w)
            yield w
            if w[H_LOGCNT]:  # commit (fetch_many and reset_stats may have committed already)
                w[H_LOGCNT] = 0
        except BaseException:
            if w[H_LOGCNT]:
                undo_failed(w)
            raise
        finally:
            self._release()
