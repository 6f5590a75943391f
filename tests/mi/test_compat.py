"""Replays every compat/transcripts case straight through MICore.handle, byte for byte."""

from __future__ import annotations

import pytest

from compat.transcripts import load_all
from mi_fifo.framer import UNPARSED, Framer, Request
from mi_server.engine import QueueSpec
from mi_server.mi.core import Staged
from tests.mi.arena_core import arena_core

CASES = load_all()


def test_transcripts_cover_every_command():
    from mi_server.mi.commands import REGISTRY

    sent = b"".join(step.request for case in CASES for step in case.steps)
    missing = [n for n in REGISTRY.names() if f'"{n}"'.encode() not in sent and n != "kill"]
    assert missing == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transcript(case):
    with arena_core([QueueSpec(**q) for q in case.queues], case.items) as (core, _):
        for n, step in enumerate(case.steps, 1):
            got = core.handle(step.request)
            assert (got is None) == (step.status == 202), f"step {n}: {got!r}"
            assert step.matches(got), (
                f"{case.source} step {n}\n  sent {step.request!r}\n  got  {got!r}\n"
                f"  want {step.reply or step.reply_pattern.pattern!r}"
            )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transcript_decoded_by_the_transport(case):
    """The FIFO's framer decodes with the core's scanner and the listener calls stage,
    then finish when stage held the command back (or handle, when the framer left the body
    undecoded): same bytes out.  Only what frames as one `:name:` request can be checked
    this way."""
    checked = 0
    with arena_core([QueueSpec(**q) for q in case.queues], case.items) as (core, _):
        for n, step in enumerate(case.steps, 1):
            events = Framer(1 << 20, 1.0, core.scan_value).feed(b":r:" + step.request, 0.0)
            if not events or type(events[0]) is not Request:
                continue  # not an object or array: the FIFO answers -32700 (tested there)
            ev = events[0]
            if ev.body != step.request.strip(b" \t\r\n"):
                continue  # bytes after the first value: another request on the FIFO
            if ev.value is UNPARSED:
                got = core.handle(ev.body)
            else:
                got = core.stage(ev.value)
                if type(got) is Staged:
                    got = core.finish(got)
            assert step.matches(got), f"{case.source} step {n}: got {got!r}"
            checked += 1
    if not checked:
        pytest.skip("no step frames as one `:name:` request (the FIFO tests cover these)")
