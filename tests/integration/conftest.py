"""A real server process per test module, on a free port and a private FIFO."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess

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
    srv = ServerProcess(workdir=workdir, queues=QUEUES).start()
    yield srv
    rc = srv.stop()
    log = srv.read_log()
    shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, log
