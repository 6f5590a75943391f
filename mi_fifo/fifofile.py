"""The request FIFO on disk: claim it for this server, tell whether another serves it,
remove it.

The FIFO's directory may be one other users can write (/tmp), so nothing here acts on the
path after looking at it: every FIFO is opened with O_NOFOLLOW and checked with fstat (a
FIFO, owned by us, one link, still the file at the path), and its mode and owner are set
on that descriptor (fchmod, fchown).  A planted symbolic link or a file swapped in between
two steps is then refused, never written through.

"Served" means locked: the server holds an flock on its FIFO for as long as it runs (the
supervisor and, through fork, the listener share the lock), so a second server with the
same `fifo.path` is refused at start, and a FIFO left by a server that died (the kernel
dropped its lock) is replaced.  Anything at the path that is not a FIFO is refused, never
deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import stat
from typing import Any, Protocol

# read-write: the listener never sees end-of-file; non-blocking: no wait for a writer
OPEN_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
ATTEMPTS = 5  # the path changed under us this often: someone keeps swapping it


class FifoSettings(Protocol):
    """What this module reads from `mi_server.config.FifoConfig`."""
    path: Any
    mode: int
    user: str | None
    group: str | None


class FifoError(Exception):
    """The FIFO cannot be created or claimed; the message names the path and the reason."""


class FifoInUse(FifoError):
    """A running server serves the FIFO at the path (it holds the FIFO's lock)."""


def _owner(cfg: FifoSettings) -> tuple[int, int]:
    """uid/gid for fchown from names or numbers; -1 leaves one unchanged."""
    uid = gid = -1
    try:
        if cfg.user:
            uid = int(cfg.user) if str(cfg.user).isdigit() else pwd.getpwnam(cfg.user).pw_uid
        if cfg.group:
            gid = int(cfg.group) if str(cfg.group).isdigit() else grp.getgrnam(cfg.group).gr_gid
    except KeyError as e:
        raise FifoError(f"fifo: no such user or group {e.args[0]!r}") from None
    return uid, gid


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a FIFO"


def ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _at_path(path: str, fd: int) -> bool:
    """The open FIFO `fd` is still the file at `path` (not unlinked or replaced since)."""
    try:
        return ident(os.lstat(path)) == ident(os.fstat(fd))
    except FileNotFoundError:
        return False


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def holder_pid(st: os.stat_result) -> int | None:
    """The pid that holds the flock on the file `st` describes, from /proc/locks."""
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def _in_use(path: str, st: os.stat_result) -> FifoInUse:
    pid = holder_pid(st)
    who = f"a running server (pid {pid})" if pid else "a running server"
    return FifoInUse(f"fifo.path {path} is served by {who}: is this server started twice?")


def _open_checked(path: str) -> int | None:
    """The FIFO at `path` opened with OPEN_FLAGS, or None if it vanished or became a
    symbolic link meanwhile (the caller looks again)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise FifoError(f"fifo.path {path}: cannot open the FIFO there: {e.strerror}") from None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # swapped for something else since lstat
        os.close(fd)
        return None
    return fd


def _remove_unserved(path: str, seen: os.stat_result) -> None:
    """`path` held the FIFO `seen` at lstat: remove it if no server serves it (a server that
    died left it); FifoInUse if one does.  Returns quietly if the path changed meanwhile."""
    fd = _open_checked(path)
    if fd is None:
        return
    try:
        st = os.fstat(fd)
        if ident(st) != ident(seen):
            return
        if not _lock(fd):
            raise _in_use(path, st)
        if _at_path(path, fd):  # locked, and still the file there: nobody serves it
            try:
                os.unlink(path)
            except OSError as e:
                raise FifoError(f"fifo.path {path}: cannot remove the FIFO a stopped server "
                                f"left there: {e.strerror}") from None
    finally:
        os.close(fd)


def _make(path: str, mode: int, uid: int, gid: int) -> int | None:
    """A new FIFO at `path`, opened, locked, mode and owner set through the descriptor;
    None if the path was taken or swapped meanwhile (the caller looks again)."""
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        return None
    except OSError as e:
        raise FifoError(f"fifo.path {path}: cannot create the FIFO: {e.strerror}") from None
    fd = _open_checked(path)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        # what mkfifo made is ours with one link; another's FIFO (or a hard link to a FIFO
        # of ours) swapped in since fails this
        if st.st_uid != os.geteuid() or st.st_nlink != 1 or not _lock(fd) \
                or not _at_path(path, fd):
            os.close(fd)
            return None
        os.fchmod(fd, mode)  # mkfifo's mode is cut by the umask; fchmod's is not
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
    except OSError as e:
        os.close(fd)
        raise FifoError(f"fifo.path {path}: cannot set up the FIFO: {e.strerror}") from None
    return fd


def claim_fifo(cfg: FifoSettings) -> int:
    """A fresh FIFO at cfg.path with cfg.mode (umask-independent) and owner, opened
    read-write and non-blocking, its lock held: the descriptor is returned.

    A FIFO no server serves (left by one that died) is replaced; one a running server
    serves is FifoInUse; anything else at the path (a regular file, a symbolic link, a
    directory...) is refused and left alone, as is a missing parent directory."""
    path = os.fspath(cfg.path)
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise FifoError(f"fifo.path {path}: directory {parent} does not exist")
    uid, gid = _owner(cfg)
    for _ in range(ATTEMPTS):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise FifoError(f"fifo.path {path}: {e.strerror}") from None
        else:
            if stat.S_ISDIR(st.st_mode):
                raise FifoError(f"fifo.path {path} is a directory; not replacing it")
            if not stat.S_ISFIFO(st.st_mode):
                raise FifoError(f"fifo.path {path} is {_kind(st.st_mode)}, not a FIFO; not "
                                "replacing it (remove it or set another fifo.path)")
            _remove_unserved(path, st)
        fd = _make(path, cfg.mode, uid, gid)
        if fd is not None:
            return fd
    raise FifoError(f"fifo.path {path} keeps changing while the FIFO is created: another "
                    "process is creating or replacing files there")


def remove_fifo(cfg: FifoSettings, fd: int) -> None:
    """At the stop: remove the FIFO at cfg.path if it is ours (the one `fd` has open, or
    one our listener made in its place that nobody serves now), never another server's or
    a file someone put there; then close `fd`, which drops the lock."""
    path = os.fspath(cfg.path)
    try:
        if _at_path(path, fd):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # with the lock still held: nobody takes it meanwhile
            return
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if stat.S_ISFIFO(st.st_mode) and st.st_uid == os.geteuid():
                _remove_unserved(path, st)
    except FifoError:
        pass  # served by another server now: its FIFO
    finally:
        os.close(fd)
