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
from mi_server.http import bind, fastpath
from mi_server.http.prefork import fork_workers, stop_workers
from mi_server.mi import MICore, build_core
from mi_server.mi.context import MIContext


@pytest.fixture(autouse=True, params=["compiled", "python"])
def http_path(request, monkeypatch) -> str:
    """Every HTTP test runs both ways: with the compiled fast path (mi_server/http/
    _fastpath.c; skipped where it was not built, which test_fastpath_build.py reports)
    and with it turned off (MQMI_HTTP_FASTPATH=0), the Python path alone."""
    if request.param == "compiled":
        if not fastpath.built():
            pytest.skip("mi_server.http._fastpath was not built")
        monkeypatch.delenv(fastpath.ENV, raising=False)
    else:
        monkeypatch.setenv(fastpath.ENV, "0")
    return request.param


@pytest.fixture
def arena() -> Iterator[Arena]:
    a = Arena.create(f"mqhttptest{os.getpid()}_{time.monotonic_ns()}", 1 << 20, [QueueSpec("q1")])
    yield a
    a.close()
    a.unlink()


@pytest.fixture
def core(arena: Arena) -> MICore:
    return build_core(MIContext(engine=arena, started=time.time()))


@pytest.fixture
def core_handle(core: MICore) -> Callable[[bytes], bytes | None]:
    return core.handle


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
def serve(port: int, core: MICore) -> Iterator[Callable[..., Served]]:
    """serve(handle=None, workers=2, idle_timeout=..., **cfg) -> Served; stopped at teardown.
    Without a handle of its own: the real MI core's, with its checked stage for the
    compiled fast path (on unless http_path is "python")."""
    started: list[Served] = []

    def start(handle=None, workers: int = 2, **kwargs) -> Served:
        options = {k: kwargs.pop(k)
                   for k in ("idle_timeout", "request_timeout", "max_connections")
                   if k in kwargs}
        cfg = HttpConfig(port=port, **kwargs)
        sock = bind(cfg)
        try:
            if handle is None:
                handle, options["checked"] = core.handle, core.run_checked
            pids = fork_workers(sock, handle, cfg, workers, **options)
        finally:
            sock.close()  # the workers hold their own copies
        served = Served(cfg, pids)
        started.append(served)
        return served

    yield start
    for served in started:
        statuses = stop_workers(served.pids)
        assert all(os.waitstatus_to_exitcode(s) == 0 for s in statuses.values()), statuses
