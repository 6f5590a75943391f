"""Replays every compat/ transcript over UDP and over a unix datagram socket, against a
real server process, byte for byte: each request is one datagram, its reply the one
datagram that comes back (a step's `<<d` line where the datagram's bytes differ)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from compat.transcripts import load_all
from tests.datagram.client import Client
from tests.datagram.conftest import datagram_server

CASES = load_all()
NO_REPLY_WAIT = 0.3  # seconds a notification is given to (wrongly) answer


@pytest.fixture(scope="module")
def servers():
    """One running server per (socket kind, queue set), started on first use."""
    running: dict[tuple[str, str], tuple] = {}

    def get(kind: str, case) -> Client:
        key = (kind, json.dumps(case.queues, sort_keys=True))
        if key not in running:
            workdir = Path(tempfile.mkdtemp(prefix="mqdc", dir="/tmp"))
            srv = datagram_server(kind, case.queues, workdir).start()
            running[key] = (srv, Client(srv.datagram))
        return running[key]

    yield get
    for srv, client in running.values():
        client.close()
        rc = srv.stop()
        log = srv.stderr()
        srv.kill()
        shutil.rmtree(srv.dir, ignore_errors=True)
        assert rc == 0, log


def prepare(srv, case) -> None:
    for q in case.queues:
        srv.request("mq_fetch", {"name": q["name"], "limit": 2**31 - 1})
    srv.request("reset_all_statistics", {})
    for name, key, value in case.items:
        assert srv.request("mq_add", [name, key, value])["result"] == "OK"


@pytest.mark.parametrize("kind", ["udp4", "unix"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transcript_over_datagram(servers, case, kind):
    srv, client = servers(kind, case)
    prepare(srv, case)
    for n, step in enumerate(case.steps, 1):
        if step.datagram_differs:
            want = step.datagram
        elif step.status == 202:
            want = None
        else:
            want = ...  # the transcript's reply (or pattern), as over HTTP
        try:
            got = client.call(step.request, timeout=NO_REPLY_WAIT if want is None else 5.0)
        except OSError as exc:
            raise AssertionError(f"{case.name} over {kind}: {exc}\n{srv.stderr()}") from None
        where = f"{case.source} step {n} over {kind}\n  sent {step.request!r}\n  got  {got!r}"
        if want is ...:
            assert step.matches(got), f"{where}\n  want {step.reply or step.reply_pattern!r}"
        else:
            assert got == want, f"{where}\n  want {want!r}"
