"""Real HTTP workers (forked processes, real sockets) over the real MI core and Arena."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from mi_server.config import HttpConfig
from mi_server.engine import Arena
from mi_server.engine.spec import QueueSpec
from mi_server.http import bind
from mi_server.http.prefork import fork_workers, stop_workers
from mi_server.mi import build_core
from mi_server.mi.context import MIContext


@pytest.fixture
def arena() -> Iterator[Arena]:
    a = Arena.create(f"mqhttptest{os.getpid()}_{time.monotonic_ns()}", 1 << 20, [QueueSpec("q1")])
    yield a
    a.close()
    a.unlink()


@pytest.fixture
def core_handle(arena: Arena) -> Callable[[bytes], bytes | None]:
    return build_core(MIContext(engine=arena, started=time.time())).handle


@dataclass
class Served:
    cfg: HttpConfig
    pids: list[int]

    @property
    def port(self) -> int:
        return self.cfg.port

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s


@pytest.fixture
def serve(port: int, core_handle) -> Iterator[Callable[..., Served]]:
    """serve(handle=None, workers=2, idle_timeout=..., **cfg) -> Served; stopped at teardown."""
    started: list[Served] = []

    def start(handle=None, workers: int = 2, **kwargs) -> Served:
        options = {k: kwargs.pop(k)
                   for k in ("idle_timeout", "request_timeout", "max_connections")
                   if k in kwargs}
        cfg = HttpConfig(port=port, **kwargs)
        sock = bind(cfg)
        try:
            pids = fork_workers(sock, handle or core_handle, cfg, workers, **options)
        finally:
            sock.close()  # the workers hold their own copies
        served = Served(cfg, pids)
        started.append(served)
        return served

    yield start
    for served in started:
        statuses = stop_workers(served.pids)
        assert all(os.waitstatus_to_exitcode(s) == 0 for s in statuses.values()), statuses
