"""The status report's periodic database probe, run in a short-lived child process.

A database host that accepts connections but never answers (a hung server, a proxy whose
backend is gone, a firewall that drops the replies) keeps a probe waiting until its
timeout.  Run in the supervisor's own loop, that wait would hold up everything the loop
does: restarting a killed listener, answering a stop, systemd's readiness.  So each probe
is forked: the child runs the probe and writes its result as one JSON object to a pipe,
and the loop reads that pipe without blocking on its next passes.  A child still running
after `deadline` seconds is killed, and every queue it probed is reported unreachable.

The child closes every descriptor it inherited but its end of the pipe first: the
supervisor's locks (pid file, FIFO) and sockets must not outlive the supervisor in a
probe that hangs.  It is reaped by the supervisor's usual waitpid(-1) loop, which ignores
pids it did not start; the pipe's end of file is what says the child is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable

Result = dict[str, "str | None"]  # queue name -> None (reachable) or why not

DEADLINE = 15.0  # seconds a probe may take, its own timeouts included, before it is killed


class DatabaseProbe:
    """One probe at a time: start() forks it, poll() returns its result once it is in."""

    def __init__(self, run: Callable[[], Result], names: list[str],
                 deadline: float = DEADLINE) -> None:
        self.run = run
        self.names = list(names)
        self.deadline = deadline
        self.pid = 0
        self.read_fd = -1
        self.started = 0.0
        self.buffer = bytearray()

    @property
    def running(self) -> bool:
        return self.read_fd >= 0

    def start(self) -> None:
        """Fork a probe, unless one is still running."""
        if self.running:
            return
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            self._child(write_fd)  # never returns
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.pid, self.read_fd, self.started = pid, read_fd, time.monotonic()
        self.buffer.clear()

    def poll(self) -> Result | None:
        """The result of the running probe if it is in (or its deadline passed); else None.
        Never blocks."""
        if not self.running:
            return None
        try:
            while chunk := os.read(self.read_fd, 65536):
                self.buffer += chunk
        except BlockingIOError:  # still running
            if time.monotonic() - self.started < self.deadline:
                return None
            self.stop()
            return dict.fromkeys(self.names, f"no answer in {self.deadline:.0f} s")
        self._close()
        return self._decode(bytes(self.buffer))

    def stop(self) -> None:
        """Kill a running probe (at the deadline, or when the server stops)."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # the supervisor may have reaped it
            os.waitpid(self.pid, 0)
        self._close()

    def _close(self) -> None:
        os.close(self.read_fd)
        self.read_fd, self.pid = -1, 0

    def _decode(self, data: bytes) -> Result:
        try:
            doc = json.loads(data)
            if isinstance(doc, dict) and set(doc) == set(self.names) and all(
                    v is None or isinstance(v, str) for v in doc.values()):
                return doc
        except ValueError:
            pass
        return dict.fromkeys(self.names, "the database probe failed")

    def _child(self, write_fd: int) -> None:
        code = 1
        try:
            # Nothing of the supervisor's may outlive it in a hanging probe; only stdio
            # (the log) and the pipe stay open.
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            data = json.dumps(self.run()).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]
            code = 0
        finally:
            os._exit(code)
