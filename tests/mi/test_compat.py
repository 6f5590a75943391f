"""Replays every compat/transcripts case straight through MICore.handle, byte for byte."""

from __future__ import annotations

import pytest

from compat.transcripts import load_all
from mi_server.engine import QueueSpec
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
    """The FIFO decodes while framing (scan_value) and calls handle_value: same bytes out."""
    with arena_core([QueueSpec(**q) for q in case.queues], case.items) as (core, _):
        for n, step in enumerate(case.steps, 1):
            text = step.request.decode("latin-1")
            start = len(text) - len(text.lstrip(" \t\r\n"))
            try:
                value = core.scan_value(text, start)[0] if step.request.isascii() else None
            except (StopIteration, ValueError):
                value = None  # not one JSON value: the transport passes the bytes instead
            got = core.handle(step.request) if value is None else core.handle_value(value)
            assert step.matches(got), f"{case.source} step {n}: got {got!r}"
