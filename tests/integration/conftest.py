"""A real server process per test module, on a free port, a private FIFO and a free UDP
port for its datagram socket."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.datagram.client import free_udp_port
from tests.serverproc import Server, free_port

QUEUES = [
    "name=cli_q;size=0",
    "name=cli_limit",
    "name=cli_named",
    "name=cli_empty",
    {"name": "cli_keep", "size": 3, "addmode": 2},
    "name=curl_q",
    "name=py_q",
    "name=sh_q",
    "name=conc_q",
]


@pytest.fixture(scope="module")
def server():
    workdir = Path(tempfile.mkdtemp(prefix="mqi", dir="/tmp"))
    dgram = f"udp:127.0.0.1:{free_udp_port()}"
    srv = Server(workdir, free_port(), queues=QUEUES, extra={"datagram": {"socket": dgram}})
    srv.datagram = dgram  # type: ignore[attr-defined]
    srv.start()
    yield srv
    rc = srv.stop()
    log = srv.stderr()
    srv.kill()
    shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, log
