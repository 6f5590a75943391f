"""Replays every compat/ transcript over a real HTTP socket and a real FIFO, against a real
server process, byte for byte.

Cases that define the same queues share one server; before each case the queues are
drained, the statistics reset and the case's items added through `mq_add`, so each case
starts from the state its transcript describes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from itertools import count
from pathlib import Path

import pytest

from compat.transcripts import load_all
from mi_server.http import fastpath
from tests.fifo.fifoserver import call as fifo_call
from tests.serverproc import Server, free_port

CASES = load_all()
_reply_names = count()


def _queues_key(case) -> str:
    return json.dumps(case.queues, sort_keys=True)


@pytest.fixture(scope="module")
def servers():
    """One running server per distinct queue set, started on first use; `http_path`
    "python": one whose HTTP workers have the compiled fast path turned off."""
    running: dict[str, Server] = {}

    def get(case, http_path: str = "compiled") -> Server:
        key = _queues_key(case) + http_path
        if key not in running:
            workdir = Path(tempfile.mkdtemp(prefix="mqc", dir="/tmp"))
            env = {fastpath.ENV: "0" if http_path == "python" else "1"}
            srv = Server(workdir, free_port(), queues=case.queues, workers=1, env=env,
                         extra={"fifo": {"path": str(workdir / "mi_fifo"),
                                         "reply_dir": f"{workdir}/", "idle_timeout": 0.2}})
            running[key] = srv.start()
        return running[key]

    yield get
    for srv in running.values():
        rc = srv.stop()
        log = srv.stderr()
        srv.kill()
        shutil.rmtree(srv.dir, ignore_errors=True)
        assert rc == 0, log


def prepare(srv: Server, case) -> None:
    for q in case.queues:
        srv.request("mq_fetch", {"name": q["name"], "limit": 2**31 - 1})
    srv.request("reset_all_statistics", {})
    for name, key, value in case.items:
        assert srv.request("mq_add", [name, key, value])["result"] == "OK"


def check(case, n, step, got: bytes | None) -> None:
    want = step.reply if step.reply is not None else step.reply_pattern.pattern
    assert step.matches(got), (
        f"{case.source} step {n}\n  sent {step.request!r}\n  got  {got!r}\n  want {want!r}")


@pytest.mark.parametrize("http_path", ["compiled", "python"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transcript_over_http(servers, case, http_path):
    """Both ways: with the HTTP workers' compiled fast path and without it."""
    srv = servers(case, http_path)
    prepare(srv, case)
    for n, step in enumerate(case.steps, 1):
        status, body = srv.post(step.request)
        assert status == step.status, (case.name, n, body)
        if step.status == 202:
            assert body == b""
        else:
            check(case, n, step, body)


def frames_as_one_fifo_request(request: bytes) -> bool:
    """The FIFO frames `:name:` + an object or array; other JSON texts are -32700 there."""
    return request.lstrip()[:1] in (b"{", b"[")


FIFO_PARSE_ERROR = b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}'


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transcript_over_fifo(servers, case):
    srv = servers(case)
    prepare(srv, case)
    for n, step in enumerate(case.steps, 1):
        name = f"compat_{next(_reply_names)}"
        got = fifo_call(srv, name, step.request)
        assert got is not None, f"{case.name} step {n}: no reply within the timeout"
        # Bytes after the first JSON value start the next request on the FIFO stream (here
        # garbage, dropped), and the core ignores them too: the transcript's reply holds.
        if not frames_as_one_fifo_request(step.request):
            assert one_line(got) == FIFO_PARSE_ERROR
        elif step.status == 202:
            assert got == b""
        else:
            check(case, n, step, one_line(got))


def one_line(reply: bytes) -> bytes:
    """The reply as OpenSIPS 3.6 writes it: one line with no newline at all (opensips-cli's
    readline() ends at the close)."""
    assert b"\n" not in reply, reply
    return reply
