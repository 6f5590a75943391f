"""The HTTP worker's compiled fast path is built, can be turned off, and without it (no C
compiler at install time) the worker serves everything in Python."""

from __future__ import annotations

import socket
import time

from mi_server.config import HttpConfig
from mi_server.http import fastpath
from mi_server.http.app import make_wsgi_app
from mi_server.http.server import Worker
from tests.http.rawhttp import post, read_reply


def test_the_extension_is_built():
    # CI and the README's install have a C compiler: a silent fallback would leave the
    # compiled path untested and the HTTP CPU figures unmet
    assert fastpath.built(), ("mi_server.http._fastpath is missing: reinstall with a C "
                              "compiler (pip install -e '.[test]') and look for its build error")


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv(fastpath.ENV, "0")
    assert fastpath.load() is None
    monkeypatch.setenv(fastpath.ENV, "1")
    assert fastpath.load() == (fastpath._serve, fastpath._accept, fastpath._poll)


def test_without_the_extension_the_python_path_serves(monkeypatch, core, http_path):
    # as the import fails where it was not built
    monkeypatch.setattr(fastpath, "_serve", None)
    monkeypatch.setattr(fastpath, "_accept", None)
    monkeypatch.setattr(fastpath, "_poll", None)
    monkeypatch.delenv(fastpath.ENV, raising=False)
    assert fastpath.load() is None
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    cfg = HttpConfig(port=listener.getsockname()[1])
    calls = []

    def checked(*args):
        calls.append(args)
        return core.run_checked(*args)

    worker = Worker(listener, make_wsgi_app(core.handle, cfg), cfg, checked=checked)
    assert worker.fast_serve is None and worker.fast_accept is None
    worker.resume_accepting()
    worker.now = time.monotonic()
    with socket.create_connection(listener.getsockname(), timeout=5) as client:
        client.sendall(post("/mi", b'{"jsonrpc":"2.0","method":"mq_get_size",'
                                   b'"params":["q1"],"id":1}'))
        worker.accept()
        reply = read_reply(client, bytearray())
    assert reply.status == 200
    assert reply.body == b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":0}},"id":1}'
    assert calls == []  # the app's core.handle answered
    for conn in list(worker.conns.values()):
        worker.close(conn)
    worker.ep.close()
    listener.close()


def test_auth_turns_it_off(core, http_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    cfg = HttpConfig(port=listener.getsockname()[1], auth=("u", "p"))
    worker = Worker(listener, make_wsgi_app(core.handle, cfg), cfg, checked=core.run_checked)
    assert worker.fast_serve is None  # the app checks the credentials of every request
    worker.ep.close()
    listener.close()


def test_a_root_the_app_matches_only_decoded_turns_it_off(core, http_path):
    # the app compares the %-decoded path with the root: the compiled path compares bytes
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    for root, on in (("m%69", False), ("mi", True), ("a/b", True)):
        cfg = HttpConfig(port=listener.getsockname()[1], root=root)
        worker = Worker(listener, make_wsgi_app(core.handle, cfg), cfg, checked=core.run_checked)
        assert (worker.fast_serve is not None) == (on and http_path == "compiled"), root
        worker.ep.close()
    listener.close()
