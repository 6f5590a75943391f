"""Start-up failures: exit 1 with one clear stderr line, no traceback, nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile

import pytest

from mi_server.config import parse_config
from mi_server.runtime.supervisor import Supervisor
from tests.serverproc import Db, closed_port_mysql_url, private_dev_log, shm_exists, wait_for


def failed_start(server, errors_only: bool = False) -> str:
    """Run the server, expect exit 1, return its single stderr line (the single ERROR
    line with `errors_only`, for a start that got far enough to log progress)."""
    proc = server.launch()
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("the server started instead of failing") from None
    err = server.stderr()
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if errors_only:
        lines = [line for line in lines if " ERROR: " in line]
    assert len(lines) == 1, err
    assert not shm_exists(server)
    assert not server.pid_file.exists()
    return lines[0]


def test_port_already_taken(servers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = failed_start(servers(port=port))
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "already in use" in line


def test_fifo_directory_missing(servers, short_tmp):
    s = servers()
    s.config["fifo"]["path"] = str(short_tmp / "no_such_dir" / "fifo")
    line = failed_start(s)
    assert str(short_tmp / "no_such_dir" / "fifo") in line


def test_database_down_for_a_queue_that_loads(servers):
    s = servers(queues=["name=q1;dbmode=1"], db_url=closed_port_mysql_url())
    line = failed_start(s)
    assert "cannot load queue 'q1'" in line and "connect" in line
    assert not s.fifo_path.exists()  # created before the load, removed again


@pytest.fixture
def mysql_db(mysql_url):
    database = Db(mysql_url)
    yield database
    database.drop_all()


def test_missing_mysql_table_for_a_queue_that_loads(servers, mysql_db):
    name = mysql_db.table_name()  # never created
    s = servers(queues=[f"name={name};dbmode=3"], db_url=mysql_db.url)
    line = failed_start(s)
    assert f"cannot load queue '{name}'" in line and "does not exist" in line


def test_missing_mysql_table_for_a_queue_that_only_saves(servers, mysql_db):
    name = mysql_db.table_name()
    s = servers(queues=[f"name={name};dbmode=2"], db_url=mysql_db.url)
    line = failed_start(s)
    assert f"queue '{name}' saves at stop but its table does not exist" in line


def test_embedded_sqlite_tables_are_created_at_start(servers, short_tmp):
    url = f"sqlite://{short_tmp}/fresh.db"
    with servers(queues=["name=qa;dbmode=1", "name=qb;dbmode=2", "name=qc;dbmode=3"],
                 db_url=url) as s:
        s.add("qb", "k", "v")
        assert s.stop() == 0, s.stderr()
    db = Db(url)
    assert sorted(r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'q_'")) == [
        "qa", "qb", "qc"]
    assert db.rows("qb") == [("k", "v")]


@pytest.mark.parametrize("handler, message", [
    ("no_such_module_xyz:go", "cannot import 'no_such_module_xyz'"),
    ("/no/such/program", "command not found"),
])
def test_unusable_consumer_handler(servers, handler, message):
    s = servers(consumers=[{"queue": "q1", "handler": handler}])
    line = failed_start(s)
    assert f"consumer for queue 'q1': handler '{handler}'" in line and message in line


def test_a_failed_later_load_gives_the_earlier_queue_back(servers, db):
    """q_a loads (its rows are deleted), then q_b fails: q_a's items go back to its table."""
    a = db.create()
    db.insert(a, [("k1", "v1"), ("k2", "v2")])
    bad = db.table_name()  # a table whose row cannot load: a NULL value
    id_type = ("INTEGER PRIMARY KEY AUTOINCREMENT" if db.url.startswith("sqlite")
               else "INT AUTO_INCREMENT PRIMARY KEY")
    db.execute(f"CREATE TABLE {db.q(bad)} ({db.q('id')} {id_type}, {db.q('key')} TEXT, "
               f"{db.q('val')} TEXT)")
    db.execute(f"INSERT INTO {db.q(bad)} ({db.q('key')}, {db.q('val')}) VALUES ('k', NULL)")
    s = servers(queues=[f"name={a};dbmode=1", f"name={bad};dbmode=1"], db_url=db.url)
    line = failed_start(s, errors_only=True)
    assert f"cannot load queue '{bad}'" in line and "NULL" in line
    assert db.rows(a) == [("k1", "v1"), ("k2", "v2")]



def test_an_unexpected_failure_after_the_load_gives_the_loaded_rows_back(short_tmp):
    """A set-up step after the load that fails with a plain exception (here: no usable
    temporary directory for the process table) must not lose the rows it deleted."""
    url = f"sqlite://{short_tmp}/queues.db"
    db = Db(url)
    t = db.create()
    db.insert(t, [("k1", "v1"), ("k2", "v2")])
    cfg = parse_config({"db_url": url, "mqueue": [f"name={t};dbmode=3"]}, "cfg", short_tmp)
    pid = os.fork()
    if pid == 0:  # the supervisor blocks signals: keep that out of the test process
        code = 2
        try:
            def no_tmp(*_a, **_k):
                raise OSError(28, "No space left on device")

            tempfile.mkdtemp = no_tmp
            code = Supervisor(cfg, ["mi-server"]).run()
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert db.rows(t) == [("k1", "v1"), ("k2", "v2")]
    assert not shm_exists(cfg.shm_name)


@pytest.mark.parametrize("size", [1, "4K"])
def test_shm_size_below_the_arenas_minimum_is_one_clear_line(servers, size):
    # it used to fail inside the engine: "cannot mmap an empty file", "mutex: word index
    # out of the arena"
    s = servers(extra={"shm_size": size})
    line = failed_start(s)
    assert line.startswith(f"{s.config_path}: shm_size: ")
    assert "too small for an arena of 2 queue(s): it needs at least" in line


def test_a_sqlite_file_in_a_missing_directory_stops_the_start_and_is_not_created(
        servers, short_tmp):
    s = servers(queues=["name=q1;dbmode=1"], db_url=f"sqlite://{short_tmp}/typo/q.db")
    line = failed_start(s, errors_only=True)
    assert f"the directory {short_tmp / 'typo'} does not exist (it is not created" in line
    assert not (short_tmp / "typo").exists()


def started_log(server) -> str:
    """Launch, wait for the start line (whatever the transports), stop; the log."""
    server.launch()
    wait_for(lambda: " INFO: started: " in server.stderr(), 20, "the start line")
    assert server.stop() == 0
    return server.stderr()


def test_a_server_with_no_transport_warns_at_start(servers):
    s = servers(fifo=False, extra={"http": {"enabled": False}})
    log = started_log(s)
    assert "WARNING: no transport is enabled" in log
    assert log.index("no transport") < log.index(" started: ")


def test_http_beyond_loopback_without_auth_warns_at_start(servers):
    s = servers(fifo=False)
    s.config["http"]["listen"] = f"0.0.0.0:{s.port}"
    log = started_log(s)
    assert (f"WARNING: HTTP listens on 0.0.0.0:{s.port}, beyond loopback, without "
            "http.auth") in log


def test_a_loopback_server_with_a_transport_warns_of_nothing(servers):
    log = started_log(servers())
    assert "WARNING" not in log


def test_syslog_without_a_syslog_socket_logs_to_stderr_and_says_so(servers, short_tmp):
    launcher, env = private_dev_log(short_tmp / "private", None)  # no /dev/log at all
    s = servers(extra={"log_target": "syslog"}, launcher=launcher, env=env)
    s.start()
    s.add("q1", "k", "v")
    assert s.stop() == 0
    lines = s.stderr().splitlines()
    assert "WARNING: log_target syslog: no syslog socket to log to (/dev/log: No such file " \
           "or directory" in lines[0]
    assert lines[0].endswith("): logging to stderr instead")
    assert any(" INFO: started: " in line for line in lines)
    assert lines[-1].endswith(" INFO: stopped")


def test_syslog_with_a_syslog_socket_gets_the_log(servers, short_tmp):
    sock_path = short_tmp / "log.sock"
    launcher, env = private_dev_log(short_tmp / "private", sock_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(sock_path))
        syslog.settimeout(10)
        s = servers(extra={"log_target": "syslog"}, launcher=launcher, env=env)
        s.start()
        got = []
        while not any(" started: " in line for line in got):
            got.append(syslog.recv(65536).decode())
        assert s.stop() == 0
    assert got[-1].startswith("<30>mqueue-mi[")  # daemon.info
    assert s.stderr() == ""
