"""Fork N worker processes serving one listening socket (tests and benchmarks use this;
the server's supervisor forks its own workers and calls run_worker the same way)."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from .app import Handle, HttpSettings
from .server import STOP_SIGNALS, run_worker


def fork_workers(sock: socket.socket, handle: Handle, cfg: HttpSettings, n: int,
                 **options: Any) -> list[int]:
    """Start n children each running run_worker(sock, handle, cfg, **options); their pids."""
    pids = []
    # Signals stay blocked from fork until run_worker has its handlers in place (it
    # unblocks them), so an early SIGTERM is a graceful stop, not a kill.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:  # child: never return into the caller's code (pytest, benchmark)
                code = 1
                try:
                    run_worker(sock, handle, cfg, **options)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pids


def stop_workers(pids: list[int], timeout: float = 10.0) -> dict[int, int]:
    """SIGTERM each worker, wait for it (SIGKILL after timeout); pid -> wait status."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    statuses = {}
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[pid] = status
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                statuses[pid] = os.waitpid(pid, 0)[1]
                break
            time.sleep(0.01)
    return statuses
