"""The real server: it answers over HTTP and the FIFO, lists its processes, replaces the
ones that die, and cleans up after itself when it stops."""

from __future__ import annotations

import os
import signal

import pytest

from tests.serverproc import alive, shm_exists, wait_for

HANDLER = "mi_server.runtime.example_handlers:append_to_file"


def test_answers_over_http_and_fifo_and_lists_every_process(servers, short_tmp):
    s = servers(workers=3, consumers=[{"queue": "q2", "processes": 2, "handler": HANDLER}],
                env={"MQ_EXAMPLE_FILE": str(short_tmp / "out.jsonl")}).start()
    s.add("q1", "k1", "v1")
    assert s.fifo_mi("mq_get_size", {"name": "q1"}) == {"Queue": {"name": "q1", "size": 1}}
    assert s.fifo_mi("mq_fetch", {"name": "q1"}) == {"Item": {"key": "k1", "value": "v1"}}
    rows = s.ps()
    assert [r["ID"] for r in rows] == list(range(7))
    assert [r["Type"] for r in rows] == [
        "attendant", "HTTP worker 1", "HTTP worker 2", "HTTP worker 3", "MI FIFO",
        "consumer q2 #1", "consumer q2 #2"]
    assert rows[0]["PID"] == s.proc.pid
    assert len({r["PID"] for r in rows}) == 7 and all(alive(r["PID"]) for r in rows)
    assert s.fifo_mi("ps") == {"Processes": rows}  # the same table from every process
    assert s.stop() == 0


@pytest.mark.parametrize("switch, state", [("1", "on"), ("0", "off")])
def test_the_fifo_listener_says_whether_it_serves_with_the_compiled_fast_path(
        servers, switch, state):
    s = servers(env={"MQMI_FIFO_FASTPATH": switch}).start()
    assert s.fifo_mi("mq_get_size", ["q1"]) == {"Queue": {"name": "q1", "size": 0}}
    assert f"compiled fast path {state})" in s.stderr()
    assert s.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_cleans_up_everything(servers, sig):
    s = servers().start()
    pids = [r["PID"] for r in s.ps()]
    assert s.pid_file.read_text() == f"{s.proc.pid}\n"
    assert shm_exists(s) and s.fifo_path.exists()
    assert s.stop(sig) == 0
    assert not s.pid_file.exists()
    assert not s.fifo_path.exists()
    assert not shm_exists(s)
    assert not any(alive(pid) for pid in pids)
    assert "Traceback" not in s.stderr()


def test_mi_kill_stops_the_server(servers):
    s = servers().start()
    assert s.mi("kill") == "OK"
    assert s.proc.wait(20) == 0
    assert not s.pid_file.exists() and not shm_exists(s)


def test_a_killed_http_worker_is_replaced_and_requests_keep_succeeding(servers):
    s = servers(workers=2).start()
    old = s.pids_by_type()["HTTP worker 1"]
    os.kill(old, signal.SIGKILL)
    for i in range(30):  # the other worker (and then the new one) keeps answering
        s.add("q1", f"k{i}", "v")
    new = wait_for(lambda: (p := s.pids_by_type().get("HTTP worker 1")) not in (None, old) and p,
                   what="a new HTTP worker 1")
    assert alive(new) and not alive(old)
    assert s.mi("mq_get_size", {"name": "q1"}) == {"Queue": {"name": "q1", "size": 30}}
    assert f"HTTP worker 1 (pid {old}) was killed by SIGKILL; restarting" in s.stderr()
    assert s.stop() == 0


def test_a_killed_fifo_listener_is_replaced(servers):
    s = servers().start()
    old = s.pids_by_type()["MI FIFO"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: s.pids_by_type().get("MI FIFO") not in (None, old), what="a new MI FIFO")
    # The new listener opens the FIFO a moment after it appears in `ps`.
    sizes = wait_for(lambda: s.fifo_mi("mq_get_sizes"), what="a FIFO reply")
    assert sizes == {"Queue": [{"name": "q2", "size": 0}, {"name": "q1", "size": 0}]}
    assert s.stop() == 0


def test_a_killed_consumer_is_replaced_and_consumes_again(servers, short_tmp):
    out = short_tmp / "out.jsonl"
    s = servers(consumers=[{"queue": "q1", "processes": 2, "handler": HANDLER}],
                env={"MQ_EXAMPLE_FILE": str(out)}).start()
    old = s.pids_by_type()
    os.kill(old["consumer q1 #2"], signal.SIGKILL)
    os.kill(old["consumer q1 #1"], signal.SIGKILL)
    new = wait_for(lambda: (t := s.pids_by_type()).get("consumer q1 #1") not in (None,
                   old["consumer q1 #1"]) and t.get("consumer q1 #2") not in (
                   None, old["consumer q1 #2"]) and t, what="both consumers replaced")
    assert all(alive(new[f"consumer q1 #{n}"]) for n in (1, 2))
    s.add("q1", "after", "restart")
    wait_for(lambda: out.exists() and '"after"' in out.read_text(), what="the item handled")
    assert s.stop() == 0


def test_mq_add_refused_for_a_full_arena_is_logged_once_not_per_request(servers):
    # workers=1: the rate limit is per process, so one worker sees every refusal
    s = servers(workers=1, fifo=False, extra={"shm_size": "256K"}).start()
    value = "v" * 4000
    refused = 0
    for n in range(200):
        reply = s.request("mq_add", ["q1", f"k{n}", value])
        if "error" in reply:
            assert reply["error"] == {"code": 500, "message": "Out of memory"}
            refused += 1
    assert refused >= 10, "the arena never filled up"
    lines = [line for line in s.stderr().splitlines() if "refused (500 Out of memory)" in line]
    assert len(lines) == 1, lines
    assert "queue 'q1'" in lines[0] and "WARNING" in lines[0]
    assert s.stop() == 0
