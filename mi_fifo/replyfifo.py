"""The reply side of mi_fifo: open a client's reply FIFO safely, write one reply, close it.

The reply path is `reply_dir` + the request's name.  It is opened before the command runs,
so a request nobody can be answered on (no such FIFO, a symlink, a regular file, a
hard-linked FIFO, the server's own FIFO, no reader) is never executed.  Every wait is
bounded: one slow or vanished client holds the single listener for at most `OPEN_BUDGET`
(+ `WRITE_STALL` for a reply bigger than the pipe that nobody reads).

This is the per-request hot path, so the common case is four system calls (open and fstat
here, write and close in `write_reply`): the checks are made on what was actually opened, which is
both cheaper and race-free compared with an lstat of the path beforehand.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import sys
import time
from stat import S_ISFIFO

PATH_MAX = 128            # OpenSIPS' limit for reply_dir + name
# ~4 x 80 ms in all, like mi_fifo, but polled often at first: opensips-cli opens its reply
# FIFO for reading only after it has written the request, so the reader usually turns up
# within a millisecond and a flat 80 ms first sleep would be pure latency.
OPEN_SCHEDULE = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.08, 0.08, 0.032)
OPEN_BUDGET = sum(OPEN_SCHEDULE)
NO_WAIT: tuple[float, ...] = ()  # a schedule: one attempt, NoReader if nobody reads yet
WRITE_STALL = 1.0         # seconds a full pipe may make no progress before we give up
_READER_GONE = "client closed its reply FIFO before the reply was written"
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

# O_NOFOLLOW: a symlink fails with ELOOP (no lstat needed); O_NONBLOCK: never wait for a
# reader inside open (ENXIO instead); O_NOCTTY: a tty planted in the reply directory must
# not become our controlling terminal.
_OPEN_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


class ReplyError(Exception):
    """The reply FIFO cannot be used; the message says why (for the log)."""


class NoReader(ReplyError):
    """The reply path is a FIFO that nobody had opened for reading when the schedule ran
    out (at once with NO_WAIT): the client may still come."""


def reply_prefix(reply_dir: str | os.PathLike[str] | bytes) -> bytes:
    """What a reply name is appended to: `reply_dir` as bytes, with a separator unless it
    is empty or has one (so prefix + name == os.path.join(reply_dir, name)).  The listener
    computes it once instead of joining and encoding on every request."""
    prefix = os.fsencode(reply_dir)
    if prefix and not prefix.endswith(b"/"):
        prefix += b"/"
    return prefix


def reply_path(prefix: bytes, name: str) -> bytes:
    """`reply_prefix(reply_dir)` + name as bytes; refuses a path over PATH_MAX bytes."""
    # os.fsencode without its Python-level checks: `name` is always a str here
    path = prefix + name.encode(_FS_ENCODING, _FS_ERRORS)
    if len(path) > PATH_MAX:
        raise ReplyError(f"reply path longer than {PATH_MAX} bytes: {path!r}")
    return path


def _check(st: os.stat_result, path: bytes) -> None:
    """The opened file must be a FIFO with a single link (not a hard link to another's)."""
    if not stat.S_ISFIFO(st.st_mode):
        raise ReplyError(f"reply path is not a FIFO: {path!r}")
    if st.st_nlink != 1:
        raise ReplyError(f"reply FIFO has {st.st_nlink} links: {path!r}")


def _no_reader_yet(path: bytes) -> None:
    """ENXIO also comes from opening a socket: only a FIFO is worth waiting for."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ReplyError(f"reply FIFO {path!r}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):  # replaced by a symlink between open and lstat
        raise ReplyError(f"reply path is a symlink: {path!r}")
    _check(st, path)


def open_reply(prefix: bytes, name: str,
               schedule: tuple[float, ...] = OPEN_SCHEDULE,
               refuse: tuple[int, int] | None = None) -> int:
    """A non-blocking write fd on the client's reply FIFO, or ReplyError.

    Opened with O_NOFOLLOW, then the opened fd itself is checked (fstat), so no swap of the
    path can make us write into something else.  `prefix` is `reply_prefix(reply_dir)`
    (the listener computes it once).  `refuse` is the (st_dev, st_ino) of the server's own FIFO:
    a reply written there would come back as input, and block the listener (its only
    reader) when bigger than the pipe."""
    path = reply_path(prefix, name)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        fd = _open_waiting(path, e, schedule)
    try:
        st = os.fstat(fd)
        # _check's conditions inlined (once per request); _check words the refusal
        if not S_ISFIFO(st.st_mode) or st.st_nlink != 1:
            _check(st, path)
        if (st.st_dev, st.st_ino) == refuse:
            raise ReplyError(f"reply path is the server's own FIFO: {path!r}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_waiting(path: bytes, error: OSError, schedule: tuple[float, ...]) -> int:
    """open_reply's slow path after a first open failed with `error`: wait (bounded) for a
    reader while the path is a FIFO without one; any other failure is a ReplyError."""
    waits = iter(schedule)
    while True:
        if error.errno == errno.ENXIO:  # no reader yet: the client may be about to open it
            _no_reader_yet(path)
            pause = next(waits, None)
            if pause is None:
                raise NoReader(f"reply FIFO {path!r}: no reader") from None
            time.sleep(pause)
        elif error.errno == errno.ELOOP:
            raise ReplyError(f"reply path is a symlink: {path!r}") from None
        else:
            raise ReplyError(f"reply FIFO {path!r}: {error.strerror}") from None
        try:
            return os.open(path, _OPEN_FLAGS)
        except OSError as e:
            error = e


def write_reply(fd: int, data: bytes, stall: float = WRITE_STALL) -> None:
    """Write all of `data` to the non-blocking fd, then close it (always).

    A full pipe is waited on with poll; `stall` seconds without progress, or the reader
    going away (EPIPE), abandons the reply with ReplyError."""
    try:
        # the common case: a reply smaller than the pipe goes in one write
        done, err = os.write(fd, data), 0
    except OSError as e:
        done, err = 0, e.errno
    finish_reply(fd, data, done, err, stall)


def finish_reply(fd: int, data: bytes, done: int, err: int,
                 stall: float = WRITE_STALL) -> None:
    """What follows a reply's first write (`write_reply`'s, or the listener's compiled fast
    path's): `done` bytes of `data` went, or that write failed with errno `err`.  Writes
    the rest, then closes fd (always); ReplyError when the reply is abandoned."""
    try:
        if err == errno.EPIPE:
            raise ReplyError(_READER_GONE)
        if err not in (0, errno.EAGAIN):
            raise ReplyError(f"reply FIFO: {os.strerror(err)}")
        if done < len(data):
            _write_rest(fd, memoryview(data)[done:], stall)
    finally:
        os.close(fd)


def _write_rest(fd: int, view: memoryview, stall: float) -> None:
    """The slow path of `write_reply`: a full pipe, waited on with poll."""
    poller: select.poll | None = None
    while view:
        try:
            view = view[os.write(fd, view):]
            continue
        except BlockingIOError:
            pass
        except BrokenPipeError:
            raise ReplyError(_READER_GONE) from None
        if poller is None:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
        if not poller.poll(stall * 1000):
            raise ReplyError(f"reply FIFO full for {stall} s; reply abandoned")
