"""The status report's database probe runs in a child process: a database host that
accepts connections but never answers holds up neither the supervisor's loop (restarts,
stops) nor, past its deadline, anything at all."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest

from mi_server.runtime.dbprobe import DatabaseProbe
from mi_server.storage import open_storage
from tests.serverproc import alive, free_port, wait_for


def _result(probe: DatabaseProbe, timeout: float = 10.0) -> dict:
    return wait_for(probe.poll, timeout, "the probe's result")


def test_the_result_of_the_child_comes_back():
    probe = DatabaseProbe(lambda: {"a": None, "b": "its table does not exist"}, ["a", "b"])
    probe.start()
    pid = probe.pid
    assert pid != os.getpid() and probe.running
    assert _result(probe) == {"a": None, "b": "its table does not exist"}
    assert not probe.running
    os.waitpid(pid, 0)  # the supervisor's waitpid(-1) does this in the server


def test_a_hanging_probe_never_blocks_poll_and_is_killed_at_its_deadline():
    probe = DatabaseProbe(lambda: time.sleep(60) or {}, ["a", "b"], deadline=1.0)
    probe.start()
    pid = probe.pid
    started = time.monotonic()
    polls = 0
    while (result := probe.poll()) is None:
        polls += 1
        time.sleep(0.01)
    took = time.monotonic() - started
    assert result == {"a": "no answer in 1 s", "b": "no answer in 1 s"}
    assert 1.0 <= took < 5.0 and polls > 10  # each poll returned at once meanwhile
    assert not alive(pid)


def test_a_probe_that_fails_or_lies_reports_every_queue_failed():
    for run in (lambda: 1 / 0, lambda: {"a": None}, lambda: {"a": 5, "b": None}):
        probe = DatabaseProbe(run, ["a", "b"])
        probe.start()
        pid = probe.pid
        assert _result(probe) == dict.fromkeys(["a", "b"], "the database probe failed")
        os.waitpid(pid, 0)


def test_one_probe_at_a_time_and_stop_kills_it():
    probe = DatabaseProbe(lambda: time.sleep(60) or {}, ["a"])
    probe.start()
    first = probe.pid
    probe.start()
    assert probe.pid == first
    probe.stop()
    assert not probe.running and not alive(first)
    assert probe.poll() is None


def test_the_child_keeps_none_of_the_parents_descriptors():
    """The supervisor's pid-file and FIFO locks must not outlive it in a hanging probe."""
    keep_r, keep_w = os.pipe()  # inheritable: the child would have them
    try:
        def run() -> dict:
            problems = {}
            for name, fd in (("r", keep_r), ("w", keep_w)):
                try:
                    os.fstat(fd)
                    problems[name] = "still open"
                except OSError:
                    problems[name] = None
            return problems

        probe = DatabaseProbe(run, ["r", "w"])
        probe.start()
        pid = probe.pid
        assert _result(probe) == {"r": None, "w": None}
        os.waitpid(pid, 0)
    finally:
        os.close(keep_r)
        os.close(keep_w)


class SilentDatabase:
    """A TCP server that accepts connections and never says a word (a hung MySQL)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.closed = True
        try:  # wakes the accept() in the thread and stops listening (close alone does not)
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent_db():
    db = SilentDatabase()
    yield db
    db.close()


def test_mysql_gives_up_on_a_server_that_never_answers(silent_db, short_tmp):
    """PyMySQL's default is to wait forever for the greeting."""
    storage = open_storage(silent_db.url, short_tmp, io_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(Exception, match="timed out"):
        storage.table_exists("q")
    assert time.monotonic() - started < 5.0


def test_a_database_that_goes_silent_shows_in_the_report_and_the_loop_goes_on(
        servers, silent_db):
    """The periodic probe of a silent database (every second here) waits out its timeout
    in its child, and meanwhile the supervisor replaces a killed listener at once."""
    s = servers(queues=["name=dq;dbmode=2"], db_url=silent_db.url,
                env={"MQMI_DB_CHECK_INTERVAL": "1"}).start()

    def status() -> dict:
        return s.mi("sr_get_status", ["mqueue", "dq"])

    got = status()
    assert (got["Readiness"], got["Status"]) == (False, -1), got
    assert got["Details"].startswith("database unreachable: ") and "timed out" in got["Details"]
    for _ in range(3):  # while probes keep hanging for 5 s each
        old = s.pids_by_type()["MI FIFO"]
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda old=old: s.pids_by_type().get("MI FIFO") not in (None, old), 10,
                 "a new MI FIFO")
        assert time.monotonic() - killed < 2.5  # a restart is 0.1-0.4 s, the loop's wake 1 s
        time.sleep(1.5)
    assert "not checked" not in json.dumps(status())
    silent_db.close()  # the save at stop then fails at once and goes to the fallback file
    assert s.stop() == 0
