"""Real servers with a datagram socket: UDP on a free port, or a unix socket in a private
directory (never OpenSIPS's udp:127.0.0.1:8080)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.datagram.client import free_udp_port
from tests.serverproc import Server, free_port


def datagram_server(kind: str, queues: list, workdir: Path, engine: dict | None = None,
                    **dgram) -> Server:
    """A server (not started) whose datagram socket is `kind`: udp4, udp6 or unix."""
    if kind == "udp4":
        socket_name = f"udp:127.0.0.1:{free_udp_port()}"
    elif kind == "udp6":
        socket_name = f"udp:[::1]:{free_udp_port('::1')}"
    else:
        socket_name = str(workdir / "mi.sock")
    extra: dict = {"datagram": {"socket": socket_name, **dgram}}
    if engine is not None:
        extra["engine"] = engine
    srv = Server(workdir, free_port(), queues=queues, workers=1, extra=extra)
    srv.datagram = socket_name  # type: ignore[attr-defined]
    return srv


@pytest.fixture
def dgram_servers() -> Iterator:
    """dgram_servers(kind, queues, engine, **datagram_keys) -> a started Server (`engine`:
    the `engine:` section, default shm); all stopped after
    (each must stop with exit code 0)."""
    started: list[Server] = []

    def make(kind: str = "udp4", queues: list | None = None, engine: dict | None = None,
             **dgram) -> Server:
        workdir = Path(tempfile.mkdtemp(prefix="mqd", dir="/tmp"))
        srv = datagram_server(kind, queues or ["name=q1", "name=q2"], workdir, engine,
                              **dgram)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        rc = srv.stop() if srv.proc is not None else 0
        log = srv.stderr()
        srv.kill()
        shutil.rmtree(srv.dir, ignore_errors=True)
        assert rc == 0, log
