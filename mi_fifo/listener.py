"""The FIFO listener process: create the FIFO, read its byte stream, answer each request.

One process serves the FIFO (as OpenSIPS' mi_fifo does).  It holds the FIFO open
read-write, so it never sees end-of-file and the empty open/close probes opensips-cli makes
cost nothing.  Bytes go through the sans-io `Framer`; for each request the reply FIFO is
opened first and the command runs only if that worked (`replyfifo`).  Every second it checks
that the path is still its own FIFO and claims a fresh one if someone deleted or replaced it
(`fifofile`: a FIFO nobody serves is replaced, anything else is left alone and logged).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from typing import Any, Protocol

from mi_fifo import fastpath
from mi_fifo.fifofile import FifoError, claim_fifo
from mi_fifo.framer import (
    UNPARSED,
    FrameEvent,
    Framer,
    Garbage,
    Oversize,
    ParseError,
    Request,
    Scan,
)
from mi_fifo.replies import PARSE_ERROR_REPLY, SERVER_ERROR_REPLY, TOO_LARGE_REPLY
from mi_fifo.replyfifo import (
    NO_WAIT,
    NoReader,
    ReplyError,
    finish_reply,
    open_reply,
    reply_prefix,
    write_reply,
)

log = logging.getLogger("mi_fifo")

CHECK_INTERVAL = 1.0   # seconds between "is the path still our FIFO?" checks
READ_SIZE = 65536      # one pipe's worth per read
_O_NOATIME = getattr(os, "O_NOATIME", 0)

Handle = Callable[[bytes], "bytes | None"]
# MICore.stage / MICore.finish: a decoded request -> its reply (bytes, None: nothing to
# send) if that runs nothing with side effects, else something `Finish` runs later
Stage = Callable[[Any], Any]
Finish = Callable[[Any], "bytes | None"]
# MICore.stage_checked: method, params, id text of a request whose envelope the compiled
# fast path checked -> what Stage returns, or (reply, settle) for a command held pending,
# which the compiled path settles at once (only it: the Python path may wait for the
# reader, and the engine is locked while a command is held); never raises
StageChecked = Callable[[str, Any, str], Any]


class _Raw:
    """A request the framer did not decode: `handle` runs it, after the reply FIFO opened."""
    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


class FifoSettings(Protocol):
    """What this package reads from `mi_server.config.FifoConfig`."""
    path: Any
    mode: int
    user: str | None
    group: str | None
    reply_dir: Any
    max_request: int
    idle_timeout: float


def _no_atime(fd: int) -> None:
    """Read without access-time updates, if we may.

    Every read of a FIFO on a disk file system updates its inode's atime (each client write
    sets mtime, so even relatime updates it every time): on ext4 that dirtied inode was ~6 %
    of the listener's CPU per request.  O_NOATIME is refused (EPERM) unless we own the
    file, e.g. after `fifo.user` gave it away; then we read with atime updates as before."""
    if not _O_NOATIME:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_NOATIME)


class _Listener:
    """The serving loop's state: the open FIFO, its identity and the framer."""

    def __init__(self, cfg: FifoSettings, handle: Handle, scan: Scan | None = None,
                 stage: Stage | None = None, finish: Finish | None = None,
                 stage_checked: StageChecked | None = None) -> None:
        self.cfg = cfg
        self.handle = handle
        self.stage = stage
        self.finish = finish
        self.stage_checked = stage_checked
        self.path = os.fspath(cfg.path)
        self.reply_prefix = reply_prefix(cfg.reply_dir)  # computed once, not per request
        # with all three, the framer's JSON pass also decodes the request for the MI core
        self.decoding = stage is not None and finish is not None
        self.framer = Framer(cfg.max_request, cfg.idle_timeout, scan if self.decoding else None)
        self.fd = -1
        self.ident: tuple[int, int] | None = None
        self.replace_failed = ""  # why the last re-creation failed (logged once)
        # set by the stop signal's handler: requests still to serve from one read are
        # dropped, since each may wait ~0.3 s for a reader (100 such would outlast the
        # supervisor's grace period); the compiled fast path reads the same flag's byte
        self.stopping = False
        self.stop_flag = bytearray(1)

    def open(self, fd: int | None = None) -> None:
        """Serve `fd`, the FIFO claimed by whoever started us (fifofile.claim_fifo: its
        lock held), or claim the FIFO at the path now."""
        if fd is None:
            fd = claim_fifo(self.cfg)
        _no_atime(fd)
        st = os.fstat(fd)
        self.fd, self.ident = fd, (st.st_dev, st.st_ino)

    def still_ours(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == self.ident

    def reopen(self) -> None:
        """The path was deleted or replaced: serve what is left, then claim a fresh FIFO
        (as at start: a FIFO nobody serves is replaced, anything else is left alone).

        On failure the old fd stays open and the next check tries again."""
        if not self.replace_failed:
            log.warning("FIFO %s was deleted or replaced; re-creating it", self.path)
        self.read_available()
        old = self.fd
        self.open(claim_fifo(self.cfg))
        os.close(old)
        self.replace_failed = ""

    def read_available(self) -> None:
        """Read and serve everything the (non-blocking) FIFO holds now: on re-creation."""
        now = time.monotonic()
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                return
            self.dispatch(self.framer.feed(data, now))
            if len(data) < READ_SIZE:
                return
            now = time.monotonic()

    def dispatch(self, events: list[FrameEvent]) -> None:
        for ev in events:
            if self.stopping:
                return
            try:
                # exact type checks, the common case first: this runs once per request
                kind = type(ev)
                if kind is Request:
                    self.answer(ev.reply_name, ev.body, None, ev.value)
                elif kind is ParseError:
                    log.info("FIFO request to %r: JSON parse error", ev.reply_name)
                    self.answer(ev.reply_name, None, PARSE_ERROR_REPLY)
                elif kind is Oversize:
                    log.warning("FIFO request to %r over %d bytes refused",
                                ev.reply_name, self.cfg.max_request)
                    self.answer(ev.reply_name, None, TOO_LARGE_REPLY)
                elif kind is Garbage:
                    log.warning("FIFO: dropped %d bytes (%s)", ev.nbytes, ev.reason)
            except Exception:  # one bad request must never stop the listener
                log.exception("FIFO: failed to serve %r", ev)

    def answer(self, name: str, body: bytes | None, fixed: bytes | None = None,
               value: Any = UNPARSED) -> None:
        """Answer `body` (or with the `fixed` reply) on the reply FIFO `name`.  `value`:
        `body` already decoded, if the framer did.

        A command with side effects runs only once the reply FIFO is open (docs/wire.md: no
        mq_fetch pops an item for nobody).  A reply that needs no such command (an error
        found while checking the request, a read-only command, a fixed reply) is made
        first, then the FIFO is opened and written back to back: the client, woken by the
        open while it waits in its own open(), then finds the reply at once instead of
        going to sleep in read() and being woken again by the write: one context switch
        pair less per request (mq_get_size, fresh reply FIFO: 63.9 -> 52.9 us of server
        CPU here).  If the client has not opened its end yet, we wait for it as always and
        then answer as of that moment (a read-only command runs again)."""
        work = fixed if body is None else self.prepare(body, value)
        ready = work is None or type(work) is bytes  # else a Staged or _Raw: not run yet
        if not name:  # `::{...}`: run, nobody to answer
            if not ready:
                self.complete(work)
            return
        prefix = self.reply_prefix
        try:
            if not ready:
                fd = open_reply(prefix, name, refuse=self.ident)
            else:
                try:
                    fd = open_reply(prefix, name, NO_WAIT, self.ident)
                except NoReader:
                    fd = open_reply(prefix, name, refuse=self.ident)
                    if body is not None:  # answer as of now, not as of before the wait
                        work = self.prepare(body, value)  # the same command: still ready
        except ReplyError as e:
            log.warning("FIFO: %s; request %s", e, "not answered" if ready else "not run")
            return
        reply = work if ready else self.complete(work)
        if reply is None:  # a notification: close with nothing written
            os.close(fd)
            return
        try:
            # no newline, as OpenSIPS 3.6: opensips-cli's readline() ends at our close
            write_reply(fd, reply)
        except ReplyError as e:
            log.warning("FIFO reply to %r: %s", name, e)

    def write_slow(self, fd: int, reply: bytes, done: int, err: int) -> None:
        """The compiled fast path's reply did not go in one write: finish it as `answer`
        does (bounded wait, log).  Anything else it raises comes back from the C loop with
        the rest of the read, and the loop logs it."""
        try:
            finish_reply(fd, reply, done, err)
        except ReplyError as e:
            log.warning("FIFO reply: %s", e)

    def prepare(self, body: bytes, value: Any) -> Any:
        """The reply if it is ready without running anything with side effects (bytes, or
        None: nothing to send), else the work `complete` does once the reply can go."""
        if value is UNPARSED:  # only decoded by the framer when stage is set
            return _Raw(body)
        try:
            return self.stage(value)  # type: ignore[misc]
        except Exception:
            log.exception("FIFO: the MI core raised")
            return SERVER_ERROR_REPLY

    def complete(self, work: Any) -> bytes | None:
        try:
            if type(work) is _Raw:
                return self.handle(work.body)
            return self.finish(work)  # type: ignore[misc]
        except Exception:
            log.exception("FIFO: the MI core raised")
            return SERVER_ERROR_REPLY


def run_listener(cfg: FifoSettings, handle: Handle, *, scan: Scan | None = None,
                 stage: Stage | None = None, finish: Finish | None = None,
                 stage_checked: StageChecked | None = None, fd: int | None = None) -> None:
    """Serve the FIFO until SIGTERM or SIGINT, then return (the FIFO is left in place).

    `fd`: the FIFO as fifofile.claim_fifo returned it to the caller (the supervisor, which
    keeps its lock for the server's life), else the listener claims cfg.path itself.

    `handle` answers request bytes.  Optionally the MI core's `scan` (a JSON scanner, see
    framer.Scan), `stage` and `finish` (see MICore.stage), for requests decoded by `scan`:
    a request is then decoded once, while framing, instead of once there and once in
    `handle`, and a reply that runs nothing with side effects is ready before the open.
    With all of those and `stage_checked` (MICore.stage_checked), the compiled fast path
    (mi_fifo.fastpath), if built, answers the common requests."""
    lst = _Listener(cfg, handle, scan, stage, finish, stage_checked)
    lst.open(fd)
    loop = _Loop(lst)
    log.info("FIFO listener serving %s (replies in %s; compiled fast path %s)", lst.path,
             cfg.reply_dir, "on" if loop.fast is not None else
             "off" if fastpath.built() else "not built")
    loop.run()


class _Loop:
    """The serving loop: a blocking read() per wake-up, no poll().

    Like Kamailio's FIFO process (strace shows it blocking in read()), the listener sleeps
    in read() on its FIFO: one system call per request instead of poll() + read() (~2 us of
    ~28 per request here).  What must interrupt that sleep is a signal: SIGTERM/SIGINT
    (stop) and SIGALRM, an interval timer for the "is the path still our FIFO?" check and
    for the framer's idle time-out.  Python retries a read() interrupted by a signal once the
    handler has run (PEP 475), so the handler makes the retry return at once instead:
    while the loop is in read(), it dup2()s /dev/null over the descriptor being read (EOF
    immediately).  The FIFO itself stays open on a second descriptor and is put back after
    the wake-up.  Nothing can be lost: if the signal lands just after read() returned data,
    the data is already ours and is served; the swap only affects the next read."""

    def __init__(self, lst: _Listener) -> None:
        self.lst = lst
        # the compiled fast path, when built and the MI core can run checked requests
        self.fast = (fastpath.load() if lst.decoding and lst.stage_checked is not None
                     else None)
        self.stopping = False
        self.woke = False      # a signal came: stop, check the path, expire held bytes
        self.reading = False   # the loop is in (or about to enter) read(read_fd)
        self.swapped = False   # read_fd is /dev/null, not the FIFO
        self.null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.read_fd = os.dup(lst.fd)
        self.next_check = 0.0

    def on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGALRM:
            self.stopping = True
            self.lst.stopping = True
            self.lst.stop_flag[0] = 1
        self.woke = True
        if self.reading and not self.swapped:
            os.dup2(self.null_fd, self.read_fd, inheritable=False)
            self.swapped = True

    def run(self) -> None:
        lst = self.lst
        # blocking reads on this descriptor (the O_NONBLOCK flag lives in the open file
        # description, which lst.fd shares: it is set back before lst.fd is read again)
        os.set_blocking(self.read_fd, True)
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
        old = {s: signal.signal(s, self.on_signal) for s in signals}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)  # whatever the parent blocked
        now = time.monotonic()
        self.next_check = now + CHECK_INTERVAL
        signal.setitimer(signal.ITIMER_REAL, CHECK_INTERVAL, CHECK_INTERVAL)
        framer = lst.framer
        read = os.read
        monotonic = time.monotonic
        fast = self.fast
        max_request = lst.cfg.max_request
        try:
            while not self.stopping:
                self.reading = True
                # a signal handled before this point has set woke: do not sleep on it
                if self.woke:
                    data = b""
                elif fast is not None and framer.idle:
                    # reads and answers the common requests itself; returns what it left
                    # (from the first request it did not take), b"" after a signal
                    data = fast(self.read_fd, READ_SIZE, lst.reply_prefix, max_request,
                                lst.ident, lst.stage_checked, lst.finish, lst.write_slow,
                                lst.stop_flag)
                    if type(data) is tuple:  # one request failed; the rest is given back
                        data, exc = data
                        log.error("FIFO: the compiled fast path failed on a request",
                                  exc_info=exc)
                else:
                    data = read(self.read_fd, READ_SIZE)
                self.reading = False
                if data and not self.stopping:
                    now = monotonic()
                    lst.dispatch(framer.feed(data, now))
                    if framer.pending:  # rare: part of a request is held back
                        self.arm_timer(now)
                if self.woke:
                    self.wake_up(monotonic())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(self.read_fd)
            os.close(self.null_fd)
            if lst.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(lst.fd)

    def arm_timer(self, now: float) -> None:
        """Wake up when the framer's held bytes time out (then every CHECK_INTERVAL)."""
        deadline = self.lst.framer.deadline()
        if deadline is not None:
            first = max(min(deadline, self.next_check) - now, 0.001)
            signal.setitimer(signal.ITIMER_REAL, first, CHECK_INTERVAL)

    def wake_up(self, now: float) -> None:
        """After a signal: put the FIFO back under read_fd, then the timed duties."""
        self.woke = False
        if self.swapped:
            os.dup2(self.lst.fd, self.read_fd, inheritable=False)
            self.swapped = False
        if self.stopping:
            return
        lst = self.lst
        framer = lst.framer
        if framer.pending:
            lst.dispatch(framer.poll(now))
            if framer.pending:
                self.arm_timer(now)
        if now >= self.next_check:
            self.next_check = now + CHECK_INTERVAL
            if not lst.still_ours():
                self.replace_fifo()

    def replace_fifo(self) -> None:
        lst = self.lst
        os.set_blocking(lst.fd, False)  # drain what the old FIFO holds without waiting
        try:
            lst.reopen()
        except (OSError, FifoError) as e:
            if str(e) != lst.replace_failed:  # once per reason, not every second
                log.error("FIFO %s cannot be re-created (will retry): %s", lst.path, e)
            lst.replace_failed = str(e) or type(e).__name__
        finally:
            # the new FIFO, or the old one after a failure
            os.dup2(lst.fd, self.read_fd, inheritable=False)
            os.set_blocking(self.read_fd, True)
