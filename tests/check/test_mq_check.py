"""mq-check against a live server over HTTP, the FIFO and UDP datagrams (exit codes, the
one line and its perfdata), and against what does not answer: a dead port, a FIFO nobody
opened, a FIFO someone holds open but never answers, an HTTP listener that never replies.
UNKNOWN (3) within --timeout each time, never a hang."""

from __future__ import annotations

import os
import socket

import pytest

from tests.check.conftest import run_check
from tests.serverproc import free_port


def _fill(server, queue: str, n: int) -> None:
    for i in range(n):
        server.add(queue, f"k{i}", "v")


def _how(server, transport: str) -> list[str]:
    if transport == "http":
        return ["--url", server.url]
    if transport == "datagram":
        return ["--datagram", server.datagram]
    return ["--fifo", str(server.fifo), "--reply-dir", str(server.reply_dir)]


@pytest.mark.parametrize("transport", ["http", "fifo", "datagram"])
def test_states_and_perfdata(server, transport):
    how = _how(server, transport)
    _fill(server, "q", 3)
    assert run_check(*how, "--queue", "q", "--warning", "100", "--critical", "1000")[:2] == \
        (0, "MQUEUE OK - q size 3 | q=3;100;1000;0\n")
    assert run_check(*how, "-q", "q", "-w", "2", "-c", "5")[:2] == \
        (1, "MQUEUE WARNING - q size 3 | q=3;2;5;0\n")
    assert run_check(*how, "-q", "q", "-w", "1", "-c", "2")[:2] == \
        (2, "MQUEUE CRITICAL - q size 3 | q=3;1;2;0\n")
    assert run_check(*how, "-q", "q", "-w", "3", "-c", "3")[:2] == \
        (0, "MQUEUE OK - q size 3 | q=3;3;3;0\n")  # above the threshold, not at it
    assert run_check(*how, "-q", "q")[:2] == (0, "MQUEUE OK - q size 3 | q=3;;;0\n")
    code, out, _ = run_check(*how, "-q", "nosuch", "-w", "1")
    assert (code, out) == (3, "MQUEUE UNKNOWN - mq_get_size: 404 No such queue\n")


@pytest.mark.parametrize("transport", ["http", "fifo", "datagram"])
def test_every_queue_when_none_is_named(server, transport):
    _fill(server, "q", 3)
    _fill(server, "other", 12)
    code, out, _ = run_check(*_how(server, transport), "-w", "10", "-c", "20")
    assert (code, out) == (1, "MQUEUE WARNING - q size 3, other size 12, idle size 0 | "
                              "q=3;10;20;0 other=12;10;20;0 idle=0;10;20;0\n")
    # the worst state wins, whichever queue it comes from
    code, out, _ = run_check(*_how(server, transport), "-w", "2", "-c", "11")
    assert code == 2 and out.startswith("MQUEUE CRITICAL - q size 3, other size 12")
    code, out, _ = run_check(*_how(server, transport), "-q", "idle", "-q", "q", "-w", "2")
    assert (code, out) == (1, "MQUEUE WARNING - idle size 0, q size 3 | idle=0;2;;0 q=3;2;;0\n")


def test_dead_port_is_unknown_at_once():
    port = free_port()
    code, out, took = run_check("--url", f"http://127.0.0.1:{port}/mi", "-q", "q", "-t", "5")
    assert code == 3 and out.startswith(f"MQUEUE UNKNOWN - cannot ask http://127.0.0.1:{port}/mi")
    assert "refused" in out and took < 5


def test_silent_http_listener_is_unknown_within_the_timeout():
    with socket.socket() as listener:  # accepts (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        code, out, took = run_check("--url", f"http://127.0.0.1:{port}/mi", "-t", "1.5")
    assert (code, out) == (3, f"MQUEUE UNKNOWN - no answer from 127.0.0.1:{port} in time\n")
    assert 1.4 < took < 4


def test_fifo_nobody_opened_is_unknown(short_tmp):
    fifo = short_tmp / "no_reader"
    os.mkfifo(fifo)
    code, out, took = run_check("--fifo", str(fifo), "--reply-dir", str(short_tmp), "-t", "1")
    assert (code, out) == (3, f"MQUEUE UNKNOWN - nobody reads the FIFO {fifo}\n")
    assert took < 4
    code, out, _ = run_check("--fifo", str(short_tmp / "absent"), "--reply-dir",
                             str(short_tmp), "-t", "1")
    assert code == 3 and out.startswith("MQUEUE UNKNOWN - cannot open the FIFO")


def test_fifo_nobody_answers_is_unknown_within_the_timeout(short_tmp):
    fifo = short_tmp / "deaf"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, read, never answered
    try:
        code, out, took = run_check("--fifo", str(fifo), "--reply-dir", str(short_tmp),
                                    "-t", "1.5")
    finally:
        os.close(reader)
    assert code == 3 and out.startswith("MQUEUE UNKNOWN - ") and "timed out" in out, out
    assert 1.4 < took < 4
    assert [p.name for p in short_tmp.iterdir() if p.name.startswith("mq_check_")] == []


def test_bad_arguments(server):
    code, out, _ = run_check("--url", server.url, "-t", "0")
    assert (code, out) == (3, "MQUEUE UNKNOWN - --timeout must be positive\n")
    code, out, _ = run_check("--url", "ftp://x/mi")
    assert (code, out) == (3, "MQUEUE UNKNOWN - bad URL 'ftp://x/mi'\n")
    # a usage error is UNKNOWN too: argparse's own exit status, 2, would read as CRITICAL
    code, out, _ = run_check("--url", server.url, "--warning", "lots")
    assert code == 3 and out.startswith("MQUEUE UNKNOWN - argument -w/--warning: invalid int")
    code, out, _ = run_check("--url", server.url, "--fifo", "/x")
    assert code == 3 and "not allowed with argument" in out
