"""The reply side of mi_fifo: open a client's reply FIFO safely, write one reply, close it.

The reply path is `reply_dir` + the request's name.  It is opened before the command runs,
so a request nobody can be answered on (no such FIFO, a symlink, a regular file, a
hard-linked FIFO, no reader) is never executed.  Every wait is bounded: one slow or vanished
client holds the single listener for at most `OPEN_BUDGET` (+ `WRITE_STALL` for a reply
bigger than the pipe that nobody reads).
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time

PATH_MAX = 128            # OpenSIPS' limit for reply_dir + name
# ~4 x 80 ms in all, like mi_fifo, but polled often at first: opensips-cli opens its reply
# FIFO for reading only after it has written the request, so the reader usually turns up
# within a millisecond and a flat 80 ms first sleep would be pure latency.
OPEN_SCHEDULE = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.08, 0.08, 0.032)
OPEN_BUDGET = sum(OPEN_SCHEDULE)
WRITE_STALL = 1.0         # seconds a full pipe may make no progress before we give up


class ReplyError(Exception):
    """The reply FIFO cannot be used; the message says why (for the log)."""


def reply_path(reply_dir: str | os.PathLike[str], name: str) -> bytes:
    """reply_dir + name as bytes; refuses a path over PATH_MAX bytes."""
    path = os.path.join(os.fsencode(reply_dir), os.fsencode(name))
    if len(path) > PATH_MAX:
        raise ReplyError(f"reply path longer than {PATH_MAX} bytes: {path!r}")
    return path


def _check(st: os.stat_result, path: bytes) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ReplyError(f"reply path is a symlink: {path!r}")
    if not stat.S_ISFIFO(st.st_mode):
        raise ReplyError(f"reply path is not a FIFO: {path!r}")
    if st.st_nlink != 1:
        raise ReplyError(f"reply FIFO has {st.st_nlink} links: {path!r}")


def open_reply(reply_dir: str | os.PathLike[str], name: str,
               schedule: tuple[float, ...] = OPEN_SCHEDULE) -> int:
    """A non-blocking write fd on the client's reply FIFO, or ReplyError.

    lstat first (clear refusal reasons), then open with O_NOFOLLOW and re-check the opened
    fd itself, so a swap between the two cannot make us write into something else."""
    path = reply_path(reply_dir, name)
    try:
        before = os.lstat(path)
    except OSError as e:
        raise ReplyError(f"reply FIFO {path!r}: {e.strerror}") from None
    _check(before, path)
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    waits = iter(schedule)
    while True:
        try:
            fd = os.open(path, flags)
            break
        except OSError as e:
            if e.errno == errno.ENXIO:  # no reader yet: the client may be about to open it
                pause = next(waits, None)
                if pause is None:
                    raise ReplyError(f"reply FIFO {path!r}: no reader") from None
                time.sleep(pause)
                continue
            if e.errno == errno.ELOOP:
                raise ReplyError(f"reply path is a symlink: {path!r}") from None
            raise ReplyError(f"reply FIFO {path!r}: {e.strerror}") from None
    try:
        after = os.fstat(fd)
        _check(after, path)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise ReplyError(f"reply FIFO {path!r} was replaced while opening it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_reply(fd: int, data: bytes, stall: float = WRITE_STALL) -> None:
    """Write all of `data` to the non-blocking fd, then close it (always).

    A full pipe is waited on with poll; `stall` seconds without progress, or the reader
    going away (EPIPE), abandons the reply with ReplyError."""
    try:
        view = memoryview(data)
        poller: select.poll | None = None
        while view:
            try:
                view = view[os.write(fd, view):]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise ReplyError("client closed its reply FIFO before the reply was written") \
                    from None
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            if not poller.poll(stall * 1000):
                raise ReplyError(f"reply FIFO full for {stall} s; reply abandoned")
    finally:
        os.close(fd)
