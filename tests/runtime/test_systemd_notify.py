"""systemd's Type=notify: READY=1 once HTTP and FIFO answer, STOPPING=1 at SIGTERM.

The test plays systemd: it binds the datagram socket that NOTIFY_SOCKET names (a path, and
an abstract-namespace '@' name) and reads what the real server sends.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from mi_server.runtime.readiness import FifoProbe, HttpProbe, Readiness
from mi_server.runtime.sdnotify import Notifier
from tests.serverproc import START_TIMEOUT

# the server's stderr is a file, and messages may stay buffered: a bounded wait, never 0
NOT_READY_WINDOW = 0.5


def _notify_socket(tmp: Path, abstract: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"mqueue-mi-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        return sock, "@" + name
    path = tmp / "notify.sock"
    sock.bind(str(path))
    return sock, str(path)


def _receive(sock: socket.socket, timeout: float) -> list[str]:
    """The lines of one notification, or [] when none arrives within `timeout`."""
    if not select.select([sock], [], [], timeout)[0]:
        return []
    return sock.recv(4096).decode().split("\n")


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_only_once_http_and_fifo_answer_and_stopping_on_sigterm(servers, short_tmp,
                                                                      abstract):
    notify, address = _notify_socket(short_tmp, abstract)
    with notify:
        server = servers(env={"NOTIFY_SOCKET": address})
        server.launch()
        lines = _receive(notify, START_TIMEOUT)
        assert "READY=1" in lines, server.stderr()
        # At the instant READY=1 arrives, both transports serve; a short bound, since
        # nothing may be left to start.
        assert server.request("mq_get_size", ["q1"], timeout=2.0)["result"] == {
            "Queue": {"name": "q1", "size": 0}}
        assert server.fifo_mi("mq_get_size", ["q1"], timeout=2.0) == {
            "Queue": {"name": "q1", "size": 0}}
        assert _receive(notify, 0.2) == []  # READY=1 is sent once
        # The probe's reply FIFO is gone from the reply directory.
        assert not [p for p in os.listdir(server.dir) if p.startswith("mqueue_mi_ready_")]
        assert "ready: HTTP and FIFO answered" in server.stderr()

        server.proc.send_signal(signal.SIGTERM)
        assert _receive(notify, 10.0) == ["STOPPING=1"]
        assert server.stop() == 0


def test_children_do_not_inherit_notify_socket(servers, short_tmp):
    """A consumer's command (or any child) must not talk to systemd as the service."""
    notify, address = _notify_socket(short_tmp, abstract=False)
    out = short_tmp / "env.txt"
    with notify:
        server = servers(env={"NOTIFY_SOCKET": address}, queues=["name=jobs"],
                         consumers=[{"queue": "jobs", "interval": 0.05,
                                     "handler": f"sh -c 'env > {out}'"}])
        server.launch()
        assert "READY=1" in _receive(notify, START_TIMEOUT), server.stderr()
        server.mi("mq_add", ["jobs", "k", "v"])
        deadline = time.monotonic() + 10
        while not out.exists() or "MQ_KEY" not in out.read_text():
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        assert "NOTIFY_SOCKET" not in out.read_text()
        assert server.stop() == 0


def test_without_notify_socket_no_probe_request_is_made(servers):
    server = servers(env={"NOTIFY_SOCKET": ""}).start()
    assert "READY=1" not in server.stderr()
    assert "ready:" not in server.stderr()
    assert server.stop() == 0


def test_readiness_waits_for_each_transport_to_answer(short_tmp):
    """The probes against real sockets and a real FIFO that answer one after the other:
    no READY=1 while either one is silent."""
    notify, address = _notify_socket(short_tmp, abstract=False)
    listening = socket.create_server(("127.0.0.1", 0))
    fifo = short_tmp / "fifo"
    os.mkfifo(fifo, 0o600)
    readiness = Readiness(Notifier(address),
                          [HttpProbe(listening, "mi"), FifoProbe(fifo, short_tmp)])

    def poll_for(seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readiness.poll(1.0)
            lines = _receive(notify, 0.02)
            if lines:
                return lines
        return []

    with notify, listening:
        # HTTP connects (the backlog) but nobody accepts; nobody has the FIFO open.
        assert poll_for(NOT_READY_WINDOW) == []
        # The FIFO is read, but nothing is answered yet.
        reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        try:
            assert poll_for(NOT_READY_WINDOW) == []
            request = os.read(reader, 4096).decode()
        finally:
            os.close(reader)
        match = re.fullmatch(r":(mqueue_mi_ready_\d+):(\{.*\})", request)
        assert match and '"method":"version"' in match.group(2)
        reply = os.open(short_tmp / match.group(1), os.O_WRONLY | os.O_NONBLOCK)
        os.write(reply, b'{"jsonrpc":"2.0","result":{},"id":1}')
        os.close(reply)
        # The FIFO answered; HTTP still has not.
        assert poll_for(NOT_READY_WINDOW) == []
        conn, _ = listening.accept()
        with conn:
            assert conn.recv(4096).startswith(b"GET /mi HTTP/1.0\r\n")
            conn.sendall(b"HTTP/1.0 405 Method Not Allowed\r\n\r\n")
            lines = poll_for(5.0)
    assert lines[0] == "READY=1"
    assert not (short_tmp / match.group(1)).exists()


def test_fifo_probe_without_a_usable_reply_dir_waits_for_the_listener(short_tmp):
    """Where no reply FIFO can be made (a reply_dir read-only to the service, as /tmp under
    ProtectSystem=strict; here one that does not exist), the probe is done once the
    listener has the FIFO open, and not before."""
    fifo = short_tmp / "fifo"
    os.mkfifo(fifo, 0o600)
    probe = FifoProbe(fifo, short_tmp / "missing")
    assert not probe.step() and not probe.step()
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # as the listener opens it
    try:
        assert probe.step()
        # it sent nothing: the listener has no request of the probe's to serve
        with pytest.raises(BlockingIOError):
            os.read(reader, 4096)
    finally:
        os.close(reader)
