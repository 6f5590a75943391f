"""A real server for the mq-check tests, and the plugin run as users run it: the console
script installed with the package, in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serverproc import Server, free_port

MQ_CHECK = Path(sys.executable).with_name("mq-check")


@pytest.fixture
def server(short_tmp):
    from tests.datagram.client import free_udp_port

    dgram = f"udp:127.0.0.1:{free_udp_port()}"
    srv = Server(short_tmp, free_port(), queues=["name=q", "name=other", "name=idle"],
                 workers=1, extra={"datagram": {"socket": dgram}})
    srv.datagram = dgram  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.kill()


def run_check(*args: str, timeout: float = 30.0) -> tuple[int, str, float]:
    """(exit code, stdout, seconds taken) of one mq-check run."""
    assert MQ_CHECK.exists(), f"{MQ_CHECK}: pip install -e . installs the console script"
    start = time.monotonic()
    proc = subprocess.run([str(MQ_CHECK), *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout, time.monotonic() - start
