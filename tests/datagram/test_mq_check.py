"""mq-check --datagram against the real datagram transport over IPv6 and a unix socket
(UDP over IPv4 is among the transports of tests/check/test_mq_check.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MQ_CHECK = str(Path(sys.executable).with_name("mq-check"))


def mq_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MQ_CHECK, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("kind", ["udp6", "unix"])
def test_sizes_and_states_over_datagram(dgram_servers, kind):
    srv = dgram_servers(kind)
    for i in range(2):
        srv.add("q1", f"k{i}", "v")
    run = mq_check("--datagram", srv.datagram, "-q", "q1", "-w", "1", "-c", "5")
    assert (run.returncode, run.stdout) == (1, "MQUEUE WARNING - q1 size 2 | q1=2;1;5;0\n")
    run = mq_check("--datagram", srv.datagram)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == "MQUEUE OK - q1 size 2, q2 size 0 | q1=2;;;0 q2=0;;;0\n"
    run = mq_check("--datagram", srv.datagram, "-q", "nosuch")
    assert run.returncode == 3 and run.stdout.startswith("MQUEUE UNKNOWN"), run.stdout


def test_no_server_on_the_socket_is_unknown_within_the_timeout(short_tmp):
    from tests.datagram.client import free_udp_port

    run = mq_check("--datagram", f"udp:127.0.0.1:{free_udp_port()}", "-t", "0.5")
    assert run.returncode == 3 and run.stdout.startswith("MQUEUE UNKNOWN"), run.stdout
