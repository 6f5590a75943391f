"""The process table behind the MI `ps` command, kept in a small JSON file.

The supervisor rewrites it (write to a temporary file, then rename) whenever a process
starts or ends; any process answering `ps` reads it. A file keeps the table out of the
queue arena and needs no lock: rename is atomic, so a reader sees the old or the new table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessEntry:
    """One row of `ps`: a stable id, the current pid, a description like "HTTP worker 1"."""

    id: int
    pid: int
    type: str


def write_table(path: Path, entries: list[ProcessEntry]) -> None:
    rows = [{"id": e.id, "pid": e.pid, "type": e.type} for e in sorted(entries, key=lambda e: e.id)]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)


def read_table(path: Path) -> list[ProcessEntry]:
    """The table as last written; empty when the file is gone (the server is stopping)."""
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    return [ProcessEntry(int(r["id"]), int(r["pid"]), str(r["type"])) for r in rows]
