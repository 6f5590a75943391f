"""The pid file: claimed at the start of the set-up, locked for the server's life, removed
at exit (only if still ours).

The pid is written to a new temporary file (mkstemp in the same directory: O_EXCL and
O_NOFOLLOW, so a planted symbolic link is never written through), locked with flock, then
put in place in one step, so a reader never sees a half-written file.  The lock tells a
live server from a dead one: a pid file whose lock is held belongs to a running server and
refuses the start; one nobody holds (the server was killed; the kernel dropped the lock)
is replaced.  Whoever replaces the file holds the old one's lock while doing so, so two
servers starting at once cannot both succeed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

ATTEMPTS = 5  # the path changed under us this often: another server is starting


class PidFileError(Exception):
    """The pid file cannot be claimed; the message is one clear line."""


class PidFileInUse(PidFileError):
    """A running server holds the pid file."""


class PidFile:
    """A claimed pid file: `fd` is the open file, its lock held until `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        """Remove the file if it is still ours (not replaced since), then drop the lock."""
        if self.fd < 0:
            return
        try:
            if _ident(os.lstat(self.path)) == _ident(os.fstat(self.fd)):
                os.unlink(self.path)  # with the lock held: nobody takes it meanwhile
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = -1


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def claim_pid_file(path: Path) -> PidFile:
    """Write this process's pid to `path` and hold its lock; PidFileInUse when a running
    server holds the file there, PidFileError for anything else in the way."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600: the pid is for everyone to read
        _locked(fd)  # a file nobody else has open yet: always granted
        os.write(fd, f"{os.getpid()}\n".encode())
        for _ in range(ATTEMPTS):
            if _put_in_place(path, tmp):
                return PidFile(path, fd)
        raise PidFileError(f"pid file {path} keeps changing: another server is starting "
                           "with the same pid_file")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _put_in_place(path: Path, tmp: str) -> bool:
    """Rename `tmp` to `path` unless a running server holds the file there; False if the
    path changed meanwhile (the caller tries again)."""
    try:
        old = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            os.link(tmp, path)  # fails if another server put its file there meanwhile
        except FileExistsError:
            return False
        os.unlink(tmp)
        return True
    except OSError as exc:
        what = "a symbolic link" if os.path.islink(path) else exc.strerror
        raise PidFileError(f"pid file {path}: {what}; not replacing it") from None
    try:
        st = os.fstat(old)
        if not stat.S_ISREG(st.st_mode):
            raise PidFileError(f"pid file {path} is not a regular file; not replacing it")
        if not _locked(old):
            pid = os.pread(old, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {pid})" if pid.isdigit() else ""
            raise PidFileInUse(f"pid file {path} is held by a running server{who}: is this "
                               "server started twice?")
        try:
            if _ident(os.lstat(path)) != _ident(st):
                return False
        except FileNotFoundError:
            return False
        os.replace(tmp, path)  # a dead server's file, replaced while we hold its lock
        return True
    finally:
        os.close(old)
