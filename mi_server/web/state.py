"""What the overview shows, gathered through MI commands like any other client's.

One call of `overview()` runs `mq_get_sizes`, `get_statistics ["mqueue:"]`, `uptime`,
`version` and `ps` through the MI core's `handle` and joins them with the queue definitions
(limit, addmode, dbmode) from the configuration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

Handle = Callable[[bytes], "bytes | None"]
# get_statistics' per-queue names are "<queue>_<counter>"; these are the counters shown.
COUNTERS = ("added", "fetched", "dropped_size", "dropped_addmode")
AGE_COUNTERS = ("oldest_age",)  # shown where the engine reports it


class MIError(Exception):
    """An MI command answered an error: (code, message) as the MI gave them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code, self.message = code, message


def call(handle: Handle, method: str, params: Any = None) -> Any:
    """The result of one MI command, or MIError."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        request["params"] = params
    reply = handle(json.dumps(request).encode())
    doc = json.loads(reply or b"null")
    if not isinstance(doc, dict):
        raise MIError(500, "no reply")
    if "error" in doc:
        err = doc["error"]
        raise MIError(err.get("code", 500), err.get("message", ""))
    return doc.get("result")


def overview(handle: Handle, specs: Sequence[Any]) -> dict[str, Any]:
    sizes = {q["name"]: q["size"] for q in call(handle, "mq_get_sizes")["Queue"]}
    try:
        stats = call(handle, "get_statistics", [["mqueue:"]])
    except MIError:  # no queue at all: nothing matched
        stats = {}
    queues = []
    for spec in specs:
        row: dict[str, Any] = {"name": spec.name, "size": sizes.get(spec.name, 0),
                               "limit": spec.size if spec.size > 0 else None,
                               "addmode": spec.addmode, "dbmode": spec.dbmode}
        for counter in COUNTERS + AGE_COUNTERS:
            row[counter] = stats.get(f"mqueue:{spec.name}_{counter}")
        queues.append(row)
    uptime = call(handle, "uptime")
    return {
        "time": time.time(),
        "server": call(handle, "version")["Server"],
        "up_since": uptime["Up since"],
        "up_time": uptime["Up time"],
        "processes": call(handle, "ps")["Processes"],
        "queues": queues,
    }
