"""Real servers with a datagram socket: UDP on a free port, or a unix socket in a private
directory (never OpenSIPS's udp:127.0.0.1:8080)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mi_server.datagram import fastpath
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


@pytest.fixture(params=["compiled", "python"])
def datagram_path(request) -> str:
    """Every test of a whole server runs both ways: with the listener's compiled fast path
    (mi_server/datagram/_fastpath.c; skipped where it was not built, which
    test_fastpath_build.py reports) and with it turned off (MQMI_DATAGRAM_FASTPATH=0),
    the Python path alone."""
    if request.param == "compiled" and not fastpath.built():
        pytest.skip("mi_server.datagram._fastpath was not built")
    return request.param


@pytest.fixture
def dgram_servers(datagram_path: str) -> Iterator:
    """dgram_servers(kind, queues, engine, **datagram_keys) -> a started Server (`engine`:
    the `engine:` section, default shm) whose listener runs `datagram_path`'s way; all
    stopped after (each must stop with exit code 0, having said which way it served)."""
    started: list[Server] = []
    switch = "1" if datagram_path == "compiled" else "0"
    said = "compiled fast path on" if datagram_path == "compiled" else "compiled fast path off"

    def make(kind: str = "udp4", queues: list | None = None, engine: dict | None = None,
             **dgram) -> Server:
        workdir = Path(tempfile.mkdtemp(prefix="mqd", dir="/tmp"))
        srv = datagram_server(kind, queues or ["name=q1", "name=q2"], workdir, engine,
                              **dgram)
        srv.env[fastpath.ENV] = switch
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        rc = srv.stop() if srv.proc is not None else 0
        log = srv.stderr()
        srv.kill()
        shutil.rmtree(srv.dir, ignore_errors=True)
        assert rc == 0, log
        assert f"datagram listener serving {srv.datagram} " in log, log
        assert said in log.split(f"datagram listener serving {srv.datagram} ")[1].split("\n")[0]
