"""The status report (sr_* commands, GET /health) and the shmem:/core: statistics of a real
server, over HTTP, the FIFO and a datagram socket, byte for byte against WIRE.md's shapes:
the groups the server registers besides core (mqueue/<queue> for a queue that saves to the
database, mi_datagram, mi_fifo, mi_http), readiness false while starting and while
stopping, a dbmode queue whose database is unreachable not ready."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from mi_server.mi import MIContext, build_core
from mi_server.runtime.statusboard import BoardReader
from tests.datagram.client import Client, free_udp_port
from tests.fifo.fifoserver import call as fifo_call
from tests.serverproc import Db, Server, closed_port_mysql_url, free_port, wait_for

DATE = r'"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}"'
_names = iter(range(1_000_000))


def both(srv: Server, method: str, params) -> list[bytes]:
    """The reply bytes of one request over HTTP, then over the FIFO, then over the
    datagram socket where the server has one (same id)."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 7},
                      separators=(",", ":")).encode()
    status, over_http = srv.post(body)
    assert status == 200
    out = [over_http, fifo_call(srv, f"sr{next(_names)}", body)]
    address = getattr(srv, "datagram", None)
    if address:
        with Client(address) as client:
            out.append(client.call(body))
    return out


def _n(srv: Server) -> int:
    return 3 if getattr(srv, "datagram", None) else 2


def reply(result) -> bytes:
    return b'{"jsonrpc":"2.0","result":%s,"id":7}' % json.dumps(
        result, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
def servers(short_tmp):
    """Server objects (not started) in the test's private directory; killed at the end."""
    made: list[Server] = []

    def make(**kwargs) -> Server:
        made.append(Server(short_tmp, free_port(), **kwargs))
        return made[-1]

    yield make
    for srv in made:
        srv.kill()


@pytest.fixture
def sqlite_db(short_tmp):
    database = Db(f"sqlite://{short_tmp}/queues.db")
    yield database
    database.drop_all()


@pytest.fixture
def server(servers, sqlite_db):
    table = sqlite_db.create()
    address = f"udp:127.0.0.1:{free_udp_port()}"
    srv = servers(queues=["name=plain", f"name={table};dbmode=2"], db_url=sqlite_db.url,
                  extra={"shm_size": "8M", "datagram": {"socket": address}})
    srv.datagram = address  # type: ignore[attr-defined]
    srv.start()
    srv.table = table
    return srv


def test_identifiers_status_and_reports(server):
    t = server.table
    up = {"Readiness": True, "Status": 1, "Details": "running"}
    db_up = {"Readiness": True, "Status": 1, "Details": "database reachable"}
    # a new group or identifier goes first, as OpenSIPS links them: core last
    assert both(server, "sr_list_identifiers", []) == [reply(
        [{"Group": "mqueue", "Identifiers": [t]},
         {"Group": "mi_datagram", "Identifiers": ["main"]},
         {"Group": "mi_fifo", "Identifiers": ["main"]},
         {"Group": "mi_http", "Identifiers": ["main"]}, {"Group": "core",
                                                         "Identifiers": ["main"]}])] * _n(server)
    assert both(server, "sr_list_status", []) == [reply(
        [{"Name": "mqueue", "Identifiers": [{"Name": t, **db_up}]},
         {"Name": "mi_datagram", "Identifiers": [{"Name": "main", **up}]},
         {"Name": "mi_fifo", "Identifiers": [{"Name": "main", **up}]},
         {"Name": "mi_http", "Identifiers": [{"Name": "main", **up}]},
         {"Name": "core", "Identifiers": [{"Name": "main", **up}]}])] * _n(server)
    assert both(server, "sr_get_status", ["core"]) == [
        b'{"jsonrpc":"2.0","result":{"Readiness":true,"Status":1,"Details":"running"},"id":7}'
    ] * _n(server)
    assert both(server, "sr_get_status", ["mqueue", t]) == [reply(db_up)] * _n(server)
    assert both(server, "sr_get_status", {"group": "MQUEUE", "identifier": "all"}) == [
        reply({"Readiness": True, "Status": 1, "Details": "aggregated"})] * _n(server)
    not_found = b'{"jsonrpc":"2.0","error":{"code":404,"message":"Identity not found"},"id":7}'
    assert both(server, "sr_get_status", ["mqueue", "plain"]) == [not_found] * _n(server)
    # core/main's log: OpenSIPS's two reports of a start, with their clocks
    report = r'\{"Timestamp":(\d+),"Date":' + DATE + r',"Log":"%s"\}'
    pattern = re.compile((r'\{"jsonrpc":"2\.0","result":\[' + report.replace("%s", "initializing")
                          + "," + report.replace("%s", "initialization completed, ready now")
                          + r'\],"id":7\}').encode())
    for got in both(server, "sr_list_reports", ["core", "main"]):
        m = pattern.fullmatch(got)
        assert m, got
        assert abs(int(m[1]) - time.time()) < 60 and int(m[1]) <= int(m[2])
        stamp = int(m[2])
        assert time.ctime(stamp).encode() in got
    assert both(server, "sr_list_reports", ["mqueue", t]) == [reply([])] * _n(server)


def test_shmem_and_core_statistics(server):
    names = ["total_size", "max_used_size", "free_size", "used_size", "real_used_size",
             "fragments"]
    pattern = re.compile(b'\\{"jsonrpc":"2\\.0","result":\\{' + b",".join(
        b'"shmem:%s":(\\d+)' % n.encode() for n in names) + b'\\},"id":7\\}')
    for got in both(server, "get_statistics", [["shmem:"]]):
        m = pattern.fullmatch(got)
        assert m, got
        total, max_used, free, used, real_used, _ = (int(v) for v in m.groups())
        assert total == 8 << 20  # shm_size, as OpenSIPS's total_size is its -m
        assert free == total - real_used and used <= real_used <= max_used <= total
    for got in both(server, "get_statistics", [["core:"]]):
        m = re.fullmatch(rb'\{"jsonrpc":"2\.0","result":\{"core:timestamp":(\d+)\},"id":7\}',
                         got)
        assert m and int(m[1]) < 60, got
    server.add("plain", "k", "v")
    time.sleep(1.1)
    for got in both(server, "get_statistics", [["plain_oldest_age", "plain_size"]]):
        m = re.fullmatch(rb'\{"jsonrpc":"2\.0","result":\{"mqueue:plain_oldest_age":(\d+),'
                         rb'"mqueue:plain_size":1\},"id":7\}', got)
        assert m and 1 <= int(m[1]) <= 30, got


def test_unreachable_database_makes_its_queue_not_ready(servers):
    srv = servers(queues=["name=down_q;dbmode=2"], db_url=closed_port_mysql_url()).start()
    for got in both(srv, "sr_get_status", ["mqueue", "down_q"]):
        doc = json.loads(got)["result"]
        assert (doc["Readiness"], doc["Status"]) == (False, -1), got
        assert doc["Details"].startswith("database unreachable: "), got
    assert both(srv, "sr_get_status", ["mqueue", "all"]) == [
        reply({"Readiness": False, "Status": -1, "Details": "aggregated"})] * _n(srv)
    # the server itself is ready: the save at stop would go to the fallback file
    assert both(srv, "sr_get_status", ["core"])[0].startswith(
        b'{"jsonrpc":"2.0","result":{"Readiness":true')


def _board_of(srv: Server, tmpdir: Path) -> Path:
    found = wait_for(lambda: glob.glob(f"{tmpdir}/mqueue-mi-{srv.proc.pid}-*/status.json"),
                     10, "the status board")
    return Path(found[0])


def _sr_core_through(board: Path) -> bytes:
    """sr_get_status core as any MI process of that server answers it from its board."""
    core = build_core(MIContext(engine=None, started=time.time(), status=BoardReader(board)))
    return core.handle(b'{"jsonrpc":"2.0","method":"sr_get_status","params":["core"],"id":1}')


def test_not_ready_while_starting(servers, short_tmp, mysql_url):
    """The set-up held by a table lock (the load of a dbmode 1 queue waits for it): the
    board says initializing, not ready, until it is done."""
    db = Db(mysql_url)
    table = db.create()
    tmpdir = short_tmp / "tmp"
    tmpdir.mkdir()
    locker = db.connect()
    try:
        locker.cursor().execute(f"LOCK TABLES `{table}` WRITE")
        srv = servers(queues=[f"name={table};dbmode=1"], db_url=mysql_url,
                      env={"TMPDIR": str(tmpdir)})
        srv.launch()
        board = _board_of(srv, tmpdir)
        time.sleep(0.5)  # the set-up is waiting for the lock
        assert _sr_core_through(board) == (
            b'{"jsonrpc":"2.0","result":{"Readiness":false,"Status":-1,'
            b'"Details":"initializing"},"id":1}')
        locker.cursor().execute("UNLOCK TABLES")
        wait_for(lambda: srv.ps(), 20, "the server to answer")
        assert _sr_core_through(board) == (
            b'{"jsonrpc":"2.0","result":{"Readiness":true,"Status":1,"Details":"running"},'
            b'"id":1}')
        assert srv.stop() == 0
    finally:
        locker.close()
        db.drop_all()


def _partial(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    return sock


def _rest(sock: socket.socket, tail: bytes) -> bytes:
    sock.sendall(tail)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def test_not_ready_while_stopping(servers, short_tmp):
    """Requests begun before the stop and finished after it: the transports answer them
    while the stop goes on, and they say not ready (core/main shutting down)."""
    tmpdir = short_tmp / "tmp"
    tmpdir.mkdir()
    srv = servers(queues=["name=q"], workers=1, env={"TMPDIR": str(tmpdir)}).start()
    board = _board_of(srv, tmpdir)
    body = b'{"jsonrpc":"2.0","method":"sr_get_status","params":["core"],"id":1}'
    host = b"Host: 127.0.0.1:%d\r\n" % srv.port
    mi = _partial(srv.port, b"POST /mi HTTP/1.1\r\n" + host + b"Content-Type: "
                            b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    health = _partial(srv.port, b"GET /health HTTP/1.1\r\n" + host)
    time.sleep(0.2)  # both connections accepted, each request half-way
    srv.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: b"shutting down" in board.read_bytes(), 10, "the stop to be reported")
    answer = _rest(mi, body)
    assert answer.endswith(b'\r\n\r\n{"jsonrpc":"2.0","result":{"Readiness":false,'
                           b'"Status":-2,"Details":"shutting down"},"id":1}'), answer
    answer = _rest(health, b"\r\n")
    assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(
        b"\r\n\r\nnot ready: shutting down\n"), answer
    assert srv.proc.wait(20) == 0


def test_a_transport_down_is_not_ready_until_it_is_back(servers):
    """The FIFO listener killed: mi_fifo says so (its restart waits 0.1 s, doubling while
    it keeps dying, so a few kills make the window wide enough to see over HTTP), then
    running again once restarted; core stays ready."""
    srv = servers(queues=["name=q"], workers=1).start()
    down = {"Readiness": False, "Status": -1, "Details": "1 of 1 process(es) down, restarting"}
    seen = []
    for _ in range(6):
        pid = srv.pids_by_type()["MI FIFO"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = srv.mi("sr_get_status", ["mi_fifo"])
            if status == down:
                seen.append(status)
                assert srv.mi("sr_get_status", ["core"])["Readiness"] is True
            elif status["Readiness"] and srv.pids_by_type().get("MI FIFO", pid) != pid:
                break
            time.sleep(0.01)
        if seen:
            break
    assert seen, "mi_fifo never reported down"
    wait_for(lambda: srv.mi("sr_get_status", ["mi_fifo"]) == {
        "Readiness": True, "Status": 1, "Details": "running"}, 15, "mi_fifo running again")
    assert srv.fifo_mi("sr_get_status", ["mi_fifo"])["Readiness"] is True  # it serves
