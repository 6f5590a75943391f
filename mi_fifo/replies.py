"""The few replies the FIFO transport writes itself (the MI core writes all the others)."""

from __future__ import annotations

import json

from mi_server.mi.errors import INVALID_REQUEST, PARSE_ERROR, SERVER_ERROR


def _error(code: int, message: str, data: str | None = None) -> bytes:
    err: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    doc = {"jsonrpc": "2.0", "error": err, "id": None}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# invalid or never-finished JSON after a valid reply name (OpenSIPS would stay silent)
PARSE_ERROR_REPLY = _error(*PARSE_ERROR)
# a request over fifo.max_request: refused before parsing, so -32600 rather than -32700
TOO_LARGE_REPLY = _error(*INVALID_REQUEST, "Request too large")
# the MI core raised (it should not): the client still gets an answer
SERVER_ERROR_REPLY = _error(*SERVER_ERROR)
