"""Example consumer handlers, for the README and the tests.

    consumers:
      - {queue: myq, processes: 3, handler: "mi_server.runtime.example_handlers:append_to_file"}

with `MQ_EXAMPLE_FILE=/path/to/items.jsonl` in the server's environment.
"""

from __future__ import annotations

import json
import os

FILE_VARIABLE = "MQ_EXAMPLE_FILE"


def append_to_file(key: str, value: str) -> None:
    """Append the item as one JSON line `{"key": ..., "value": ..., "pid": ...}`.

    One `write` on an O_APPEND descriptor, so lines from several consumer processes never
    interleave. Raises KeyError when the variable is not set (logged as a handler failure).
    """
    line = json.dumps({"key": key, "value": value, "pid": os.getpid()}) + "\n"
    fd = os.open(os.environ[FILE_VARIABLE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8", "surrogatepass"))
    finally:
        os.close(fd)


def fail_on_bad(key: str, value: str) -> None:
    """Like append_to_file, but raises for a key starting with "bad" (failure handling)."""
    if key.startswith("bad"):
        raise ValueError(f"refusing key {key!r}")
    append_to_file(key, value)
