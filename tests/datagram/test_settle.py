"""A held fetch whose settle fails (Redis: the hold's lease ran out, or Redis is gone) is
one warning, never an exception out of the listener's loop."""

from __future__ import annotations

import logging

import pytest

from mi_server.datagram.server import Listener
from mi_server.engine.errors import EngineUnavailable


@pytest.mark.parametrize("sent, exc, words", [
    (True, RuntimeError("the pending fetch was undone before it was settled"),
     "could not be committed after its reply was sent"),
    (False, EngineUnavailable("Redis unreachable"), "could not be undone"),
])
def test_a_failed_settle_is_a_warning(caplog, sent, exc, words):
    calls = []

    def settle(commit: bool) -> None:
        calls.append(commit)
        raise exc

    with caplog.at_level(logging.WARNING, logger="mi_datagram"):
        Listener.settle(settle, sent)
    assert calls == [sent]
    assert [r.getMessage() for r in caplog.records] == [
        f"datagram: a held fetch {words}: {exc}"]
