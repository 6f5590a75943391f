"""The datagram listener as a supervised process: ps, its title, restart, status, stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.datagram.client import Client
from tests.serverproc import alive, wait_for


def test_listed_by_ps_as_mi_datagram_with_its_process_name(dgram_servers):
    srv = dgram_servers("udp4")
    pid = srv.pids_by_type()["MI Datagram"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "mi-datagram"
    with Client(srv.datagram) as c:  # `ps` over the datagram socket lists it too
        types = [p["Type"] for p in c.mi("ps")["result"]["Processes"]]
    assert types == ["attendant", "HTTP worker 1", "MI FIFO", "MI Datagram"]


def test_a_killed_datagram_listener_is_restarted_and_serves_the_same_socket(dgram_servers):
    srv = dgram_servers("unix")
    old = srv.pids_by_type()["MI Datagram"]
    with Client(srv.datagram) as c:
        os.kill(old, signal.SIGKILL)
        new = wait_for(lambda: (p := srv.pids_by_type().get("MI Datagram")) not in (None, old)
                       and p, what="a new MI Datagram")
        assert alive(new) and not alive(old)
        # a request sent meanwhile waits in the inherited socket's queue
        assert c.mi("mq_get_size", ["q1"])["result"] == {"Queue": {"name": "q1", "size": 0}}
    assert f"MI Datagram (pid {old}) was killed by SIGKILL; restarting" in srv.stderr()
    assert Path(srv.datagram).exists()


def test_the_status_report_has_a_mi_datagram_group(dgram_servers):
    srv = dgram_servers("udp4")
    status = wait_for(lambda: (r := srv.mi("sr_get_status", ["mi_datagram", "main"]))
                      .get("Readiness") and r, what="mi_datagram ready")
    assert status == {"Readiness": True, "Status": 1, "Details": "running"}


def test_the_unix_socket_is_removed_at_stop_and_a_stale_one_replaced_at_start(dgram_servers):
    srv = dgram_servers("unix")
    path = Path(srv.datagram)
    assert path.is_socket() and oct(path.stat().st_mode & 0o777) == "0o660"
    assert srv.stop() == 0
    assert not path.exists()
    # a server killed with SIGKILL leaves its socket behind: the next start replaces it
    srv.start()
    pid = srv.proc.pid
    for child in srv.pids_by_type().values():
        if child != pid:
            os.kill(child, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    srv.proc.wait()
    assert path.is_socket()
    srv.start()
    with Client(srv.datagram) as c:
        assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 0


def test_a_second_server_on_a_live_socket_refuses_to_start(dgram_servers, short_tmp):
    from tests.serverproc import Server, free_port

    srv = dgram_servers("unix")
    other = Server(short_tmp, free_port(), fifo=False,
                   extra={"datagram": {"socket": srv.datagram}})
    other.launch()
    assert other.proc.wait(20) == 1
    assert "another process is bound to it" in other.stderr()
    with Client(srv.datagram) as c:  # the first one still serves
        assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 0


def test_a_udp_port_in_use_is_one_clear_start_up_error(dgram_servers, short_tmp):
    from tests.serverproc import Server, free_port

    srv = dgram_servers("udp4")
    other = Server(short_tmp, free_port(), fifo=False,
                   extra={"datagram": {"socket": srv.datagram}})
    other.launch()
    assert other.proc.wait(20) == 1
    assert f"datagram.socket {srv.datagram}: cannot bind: Address already in use" \
        in other.stderr()


def test_ready_1_waits_for_the_datagram_listener_too(short_tmp):
    """systemd's READY=1 comes once a `version` sent over the datagram socket (unix: from
    an abstract address, leaving no file) was answered, as for HTTP and FIFO."""
    import select
    import shutil
    import socket
    import tempfile

    from tests.datagram.conftest import datagram_server
    from tests.serverproc import START_TIMEOUT

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_tmp / "notify.sock"))
    workdir = Path(tempfile.mkdtemp(prefix="mqd", dir="/tmp"))
    srv = datagram_server("unix", ["name=q1"], workdir)
    srv.env["NOTIFY_SOCKET"] = str(short_tmp / "notify.sock")
    try:
        srv.launch()
        assert select.select([notify], [], [], START_TIMEOUT)[0], srv.stderr()
        lines = notify.recv(4096).decode().split("\n")
        assert "READY=1" in lines
        assert "STATUS=serving (HTTP and FIFO and datagram answered)" in lines
        with Client(srv.datagram) as c:  # serving at that instant
            assert c.mi("mq_get_size", ["q1"], timeout=2.0)["result"]["Queue"]["size"] == 0
        assert sorted(os.listdir(workdir)) == sorted(
            ["mi.sock", "mi_fifo", "server.pid", "server.yaml", "stderr.log"])
        assert srv.stop() == 0
    finally:
        notify.close()
        srv.kill()
        shutil.rmtree(workdir, ignore_errors=True)
