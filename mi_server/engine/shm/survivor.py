"""What a starting server finds under its arena's name: nothing, the arena of a server
that died (to adopt), or a file it must not take.

Decided with the file's owner lock (Arena.hold_owner_lock), which its server holds for
its whole life and the kernel drops when it dies: whoever takes it has the file to
itself as far as servers go, so two servers never adopt the same arena.  The header's
owner pid and start time only name the server in messages, and catch a live owner that
holds no lock.  Whatever cannot be adopted is renamed aside and reported, never deleted,
except an arena its server closed (it stopped cleanly and had saved what it saves).
"""

from __future__ import annotations

import mmap
import os
import stat
import time
from dataclasses import dataclass, field

from ..errors import ArenaCorrupt
from .arena import Arena
from .layout import (
    H_MAGIC,
    H_OWNER_PID,
    H_OWNER_START,
    H_VERSION,
    HEADER_WORDS,
    MAGIC,
    VERSION,
)
from .lifecycle import process_start_time, shm_path

ATTEMPTS = 5  # the file changed between open and lock this often: another server is starting


class ArenaInUse(Exception):
    """A live server holds the arena (or is adopting it); the message is one clear line."""


class ArenaNotOurs(Exception):
    """The file under the arena's name is not one this server may take (another user's, a
    symbolic link, not a regular file); the message is one clear line."""


@dataclass
class Found:
    arena: Arena | None = None  # to adopt: owner lock held, invariants checked
    owner_pid: int = 0  # the dead server's pid
    notes: list[str] = field(default_factory=list)  # what was done with what was not adopted


def find_survivor(name: str) -> Found:
    """Look at /dev/shm/<name>: Found(arena) when it is the arena of a dead server that can
    be adopted (its owner lock is then held by the returned Arena), else Found(None) with
    notes saying what was done with whatever was there.  ArenaInUse / ArenaNotOurs."""
    path = shm_path(name)
    found = Found()
    for _ in range(ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise ArenaNotOurs(f"{path} cannot be opened as an arena ({exc.strerror}): "
                               "remove it or set another shm_name") from None
        done, fd_kept = _examine(name, path, fd, found)  # closes fd when it raises
        if not fd_kept:
            os.close(fd)
        if done:
            return found
    raise ArenaInUse(f"{path} keeps changing: another server with the same shm_name is "
                     "starting")


def _examine(name: str, path: str, fd: int, found: Found) -> tuple[bool, bool]:
    """One look at the open file `fd`: (done, fd kept).  Not done when it was not (any
    more) the file at `path` (the caller looks again).  The caller closes fd unless it
    was kept, i.e. handed to an Arena (found.arena, or one closed here); when this
    raises, fd is closed already."""
    arena: Arena | None = None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise ArenaNotOurs(f"{path} is not an arena of this server's user (uid "
                               f"{os.geteuid()}; the file: uid {st.st_uid}, mode "
                               f"{stat.filemode(st.st_mode)}): remove it or set another "
                               "shm_name")
        probe = _Probe(fd, st.st_size)
        if not probe.lock():
            pid, start = probe.owner()
            if pid and start and process_start_time(pid) == start:
                raise ArenaInUse(f"{path} is in use by a running server (pid {pid}): is "
                                 "this configuration started twice?")
            raise ArenaInUse(f"{path} is in use by another server starting now (adopting "
                             "it, or its creator, which holds no pid we know): is this "
                             "configuration started twice?")
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False, False  # renamed or replaced since we opened it
        reason = probe.incompatible()
        if reason:
            found.notes.append(_set_aside(name, path, reason))
            return True, False
        mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            arena = Arena(name, path, fd, mm)
        except ValueError as exc:  # e.g. a lock this install cannot take
            mm.close()
            found.notes.append(_set_aside(name, path, str(exc)))
            return True, False
        pid, start = arena.owner
        if arena.closed:
            arena.unlink()
            found.notes.append(f"{path}: the arena of a server (pid {pid}) that stopped "
                               "cleanly was still there: removed (it had saved what it "
                               "saves)")
        elif start and process_start_time(pid) == start:  # alive, yet it held no lock
            raise ArenaInUse(f"{path} is in use by a running server (pid {pid})")
        else:
            try:
                arena.check_invariants()
            except ArenaCorrupt as exc:
                found.notes.append(_set_aside(name, path,
                                              f"it fails its consistency checks ({exc})"))
            else:
                found.arena, found.owner_pid = arena, pid
                return True, True
        arena.close()
        return True, True
    except BaseException:
        if arena is not None:
            arena.close()
        else:
            os.close(fd)
        raise


class _Probe:
    """The raw header of a file that may not be an arena at all, read with os.pread."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def lock(self) -> bool:
        import fcntl

        from .lifecycle import _OFD_WRITE_LOCK

        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _OFD_WRITE_LOCK)
        except BlockingIOError:
            return False
        except PermissionError:
            return False
        return True

    def word(self, index: int) -> int:
        data = os.pread(self.fd, 8, index * 8)
        return int.from_bytes(data, "little") if len(data) == 8 else 0

    def owner(self) -> tuple[int, int]:
        """(pid, start time) of the creator, when the header is one of ours; else (0, 0)."""
        ok = self.size >= HEADER_WORDS * 8 and self.word(H_MAGIC) == MAGIC
        if not (ok and self.word(H_VERSION) == VERSION):
            return 0, 0
        return self.word(H_OWNER_PID), self.word(H_OWNER_START)

    def incompatible(self) -> str | None:
        if self.size % 8 or self.size < HEADER_WORDS * 8:
            return f"it is not an arena ({self.size} bytes)"
        if self.word(H_MAGIC) != MAGIC:
            return "it is not a ready arena (no magic: another program's file, or a server " \
                   "that died while creating it)"
        version = self.word(H_VERSION)
        if version != VERSION:
            return f"its layout is version {version}, this server's {VERSION}"
        return None


def _set_aside(name: str, path: str, reason: str) -> str:
    """Rename the file out of the arena's way (kept for a human); the line saying so."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = shm_path(f"{name}.unadopted-{stamp}-{os.getpid()}")
    os.rename(path, aside)
    return (f"{path} cannot be adopted: {reason}; renamed to {aside} (nothing in it was "
            "used; remove it when done)")
