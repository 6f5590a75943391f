"""One datagram in, at most one datagram out: OpenSIPS mi_datagram's framing, no I/O.

A datagram holds one bare JSON request (bytes after the value, such as a newline, are
ignored); the reply is the MI core's compact JSON, or one of mi_datagram's two plain-text
replies: `400 Parse_error` for a request that does not parse (or is over the buffer) and
`500 Internal error` for a reply that cannot be produced within the buffer.  Notifications
and empty datagrams get nothing.

What makes this transport differ from OpenSIPS is mq_fetch: its removal is held
(MICore.stage_held) until the transport knows whether the reply went out, so a reply over
the buffer or one the sender never takes leaves every item queued, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mi_server.mi.jsonvalues import ParseError, parse

log = logging.getLogger("mi_datagram")

PARSE_ERROR = b"400 Parse_error"
INTERNAL_ERROR = b"500 Internal error"

Settle = Callable[[bool], None]
# MICore.stage_held(doc, budget) and MICore.finish(staged); TOO_LARGE is its marker
StageHeld = Callable[[Any, int], Any]
Finish = Callable[[Any], "bytes | None"]
# MICore.stage_checked_held(method, params, id_text, budget): stage_held for a request the
# compiled fast path has decoded and checked
StageChecked = Callable[[str, Any, str, int], Any]


class DatagramProtocol:
    """answer(datagram) -> (reply or None, settle or None).

    When settle is given, the engine is locked with a change held pending: the caller
    sends the reply and calls settle(True) if it went out, settle(False) if not, at once
    and whatever happens in between."""

    def __init__(self, stage_held: StageHeld, finish: Finish, too_large: object,
                 buffer_size: int, checked: StageChecked | None = None) -> None:
        self.stage_held = stage_held
        self.checked = checked  # for the compiled fast path (server.Listener)
        self.finish = finish
        self.too_large = too_large
        self.budget = buffer_size

    def answer(self, data: bytes) -> tuple[bytes | None, Settle | None]:
        if not data:
            return None, None
        if len(data) > self.budget:
            log.warning("datagram request of %d bytes is over datagram.buffer_size (%d): "
                        "answered 400", len(data), self.budget)
            return PARSE_ERROR, None
        try:
            doc = parse(data)
        except ParseError:
            return PARSE_ERROR, None
        except Exception:  # a bug must still get an answer, never stop the listener
            log.exception("datagram: the MI core failed to parse a request")
            return INTERNAL_ERROR, None
        return self.outcome(self.stage_held(doc, self.budget))  # stage_held never raises

    def outcome(self, work: Any) -> tuple[bytes | None, Settle | None]:
        """What `answer` makes of stage_held's answer (the compiled fast path hands it
        what MICore.stage_checked_held gave when that was not a reply it sends itself)."""
        kind = type(work)
        if kind is bytes:
            return self._fit(work), None
        if work is None:  # a notification: it has run
            return None, None
        if kind is tuple:  # Held: (reply within the budget, settle)
            return work[0], work[1]
        if work is self.too_large:  # nothing changed
            log.info("datagram: reply over datagram.buffer_size (%d bytes): answered 500, "
                     "nothing fetched", self.budget)
            return INTERNAL_ERROR, None
        reply = self.finish(work)  # a Staged command with side effects: runs now
        return (None if reply is None else self._fit(reply)), None

    def _fit(self, reply: bytes) -> bytes:
        if len(reply) <= self.budget:
            return reply
        log.warning("datagram: reply of %d bytes is over datagram.buffer_size (%d): "
                    "answered 500", len(reply), self.budget)
        return INTERNAL_ERROR
