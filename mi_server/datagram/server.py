"""The datagram listener process: read a datagram, answer it, from one bound socket.

One process serves the socket (as OpenSIPS mi_datagram's default of one child).  The
socket is bound by the supervisor and inherited, so a restarted listener serves the same
address at once and a datagram sent meanwhile waits in the socket's queue.

Replies are sent without blocking (MSG_DONTWAIT) from the server's own socket to the
sender's address: a unix-socket client that stops reading fills its queue (ten datagrams
by default) and the next reply to it would block the listener for everyone; instead it
is dropped, with a log line at most every LOG_INTERVAL seconds.  A held mq_fetch whose
reply is dropped is undone (its items stay queued).

The common request (one narrow JSON-RPC request per datagram) is served by the compiled
fast path (fastpath.py, _fastpath.c) when it is built, from the receive to the send; it
hands every other datagram back to `Listener.serve`, which defines every behaviour.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from typing import Any

from mi_server.datagram import fastpath
from mi_server.datagram.protocol import DatagramProtocol

log = logging.getLogger("mi_datagram")

LOG_INTERVAL = 10.0  # seconds between two "replies dropped" lines


class DropLog:
    """Rate-limited log of replies that could not be sent."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.suppressed = 0

    def dropped(self, address: Any, why: str) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last line)" if self.suppressed else ""
        log.warning("datagram reply to %r dropped: %s%s", address or "an unbound socket",
                    why, more)
        self.suppressed = 0
        self.next_at = now + self.interval


class Listener:
    """The serving loop over one bound datagram socket.

    It sleeps in a blocking recvfrom(): one system call per request, no poll().  To stop,
    the signal handler must make that call return: Python retries a call interrupted by a
    signal once the handler has run (PEP 475), so the handler dup2()s /dev/null over the
    descriptor being read, and the retried recvfrom fails at once (ENOTSOCK).  The loop
    reads through its own duplicate of the socket's descriptor, so the socket itself (used
    for sending) is never touched, and a datagram received just before the signal is still
    answered.

    The compiled fast path (when the protocol has the MI core's checked stage and the
    extension is loaded) sleeps in its own blocking recvfrom() on the same duplicate: a
    signal makes it return (EINTR, after the handler ran, or ENOTSOCK once /dev/null is in
    place) and the stop flag, set by the handler, ends it after the datagram in hand."""

    def __init__(self, sock: socket.socket, protocol: DatagramProtocol,
                 buffer_size: int) -> None:
        self.sock = sock
        self.protocol = protocol
        self.read_size = buffer_size + 1  # one more: a request over the buffer is seen
        self.drops = DropLog()
        self.fast = fastpath.load() if protocol.checked is not None else None
        self.stop_flag = bytearray(1)  # the compiled path's view of `stopping`
        self.stopping = False
        self.reading = False
        self.swapped = False
        self.null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.read_fd = os.dup(sock.fileno())
        self.reader = socket.socket(fileno=self.read_fd)
        self.reader.setblocking(True)

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True
        self.stop_flag[0] = 1
        if self.reading and not self.swapped:
            os.dup2(self.null_fd, self.read_fd, inheritable=False)
            self.swapped = True

    def run(self) -> None:
        signals = (signal.SIGTERM, signal.SIGINT)
        old = {s: signal.signal(s, self.on_signal) for s in signals}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)  # whatever the parent blocked
        recvfrom = self.reader.recvfrom
        serve = self.serve
        size = self.read_size
        fast = self.fast
        if fast is not None:
            p = self.protocol
            fast_args = (self.read_fd, self.sock.fileno(), size,
                         (p.checked, p.outcome, self.drop, self.settle_failed),
                         self.stop_flag)
        try:
            while not self.stopping:
                self.reading = True
                if self.stopping:  # the signal came before `reading` was set
                    break
                try:
                    if fast is not None:
                        # serves the common requests itself; gives back a datagram it
                        # does not take, None after a signal, or a request's failure
                        got = fast(*fast_args)
                        if type(got) is not tuple:
                            self.reading = False
                            if got is not None:
                                log.error("datagram: the compiled fast path failed on a "
                                          "request", exc_info=got)
                            continue
                        data, address = got
                    else:
                        data, address = recvfrom(size)
                except OSError as exc:
                    self.reading = False
                    if self.stopping:
                        break
                    log.debug("datagram recvfrom: %s", exc)  # e.g. a queued ICMP error
                    continue
                self.reading = False
                try:
                    serve(data, address)
                except Exception:  # one bad datagram must never stop the listener
                    log.exception("datagram: failed to serve a request")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.reader.close()
            os.close(self.null_fd)

    def serve(self, data: bytes, address: Any) -> None:
        reply, settle = self.protocol.answer(data)
        sent = False
        try:
            if reply is not None:
                sent = self.send(reply, address)
        finally:
            if settle is not None:
                self.settle(settle, sent)

    @staticmethod
    def settle(settle: Any, sent: bool) -> None:
        """Commit (the reply went out) or undo the held change.  On Redis this can fail:
        the hold's lease ran out first (the item is back in the queue, so a reply that was
        sent delivered it twice) or Redis cannot be reached (the lease gives it back)."""
        try:
            settle(sent)
        except Exception as exc:
            Listener.settle_failed(sent, exc)

    @staticmethod
    def settle_failed(sent: bool, exc: Exception) -> None:
        log.warning("datagram: a held fetch could not be %s: %s",
                    "committed after its reply was sent" if sent else "undone", exc)

    def send(self, reply: bytes, address: Any) -> bool:
        if not address:  # an unbound unix socket: there is no address to answer
            self.drop(address, 0)
            return False
        try:
            self.sock.sendto(reply, socket.MSG_DONTWAIT, address)
            return True
        except OSError as exc:
            # -1: an error without an errno (e.g. Python's "AF_UNIX path too long"),
            # told by its text, not taken for 0, "no address"
            self.drop(address, exc.errno or -1, exc.strerror or str(exc))
        return False

    def drop(self, address: Any, err: int, text: str = "") -> None:
        """A reply not sent: `err` its errno (0: the sender has no address; -1: an
        error without an errno, `text` says which)."""
        if not err:
            why = "the sender has no address"
        elif err in (errno.EAGAIN, errno.EWOULDBLOCK):
            why = "the sender does not read its replies"
        else:
            why = text or os.strerror(err)
        self.drops.dropped(address, why)


def run_listener(sock: socket.socket, core: Any, buffer_size: int, where: str) -> None:
    """Serve `sock` with the MI `core` until SIGTERM or SIGINT, then return."""
    from mi_server.mi.core import TOO_LARGE

    protocol = DatagramProtocol(core.stage_held, core.finish, TOO_LARGE, buffer_size,
                                checked=core.stage_checked_held)
    listener = Listener(sock, protocol, buffer_size)
    log.info("datagram listener serving %s (buffer %d bytes; compiled fast path %s)", where,
             buffer_size, "on" if listener.fast is not None else
             "off" if fastpath.built() else "not built")
    listener.run()
