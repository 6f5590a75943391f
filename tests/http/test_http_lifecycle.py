"""Binding and stopping: the port-in-use error, SIGTERM with a request in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from mi_server.config import HttpConfig
from mi_server.http import BindError, bind
from tests.http.rawhttp import closed_by_peer, post, read_reply


def test_bind_reports_a_port_in_use(port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(BindError, match=f"127.0.0.1:{port}.*already in use"):
            bind(HttpConfig(port=port))


def test_sigterm_answers_the_request_in_flight_then_returns(serve, core_handle, tmp_path):
    started = tmp_path / "started"
    release = tmp_path / "release"

    def slow_handle(body: bytes) -> bytes | None:
        started.touch()
        while not release.exists():  # hold the request until the test has sent SIGTERM
            time.sleep(0.01)
        return core_handle(body)

    s = serve(slow_handle, workers=1)
    busy = s.connect()
    idle = s.connect()
    body = json.dumps({"jsonrpc": "2.0", "method": "mq_get_size", "params": ["q1"], "id": 7})
    busy.sendall(post("/mi", body.encode()))
    while not started.exists():
        time.sleep(0.01)
    os.kill(s.pids[0], signal.SIGTERM)
    time.sleep(0.2)  # let the signal land while the request is still running
    release.touch()
    reply = read_reply(busy, bytearray())
    assert reply.status == 200 and json.loads(reply.body)["id"] == 7
    assert reply.headers["connection"] == "close"
    assert closed_by_peer(busy) and closed_by_peer(idle)
    _, status = os.waitpid(s.pids[0], 0)
    assert os.waitstatus_to_exitcode(status) == 0
    s.pids.clear()  # already reaped
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2)
