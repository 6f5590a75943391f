"""The status report behind the MI `sr_*` commands and GET /health, kept in a small file.

Like OpenSIPS's status/report framework (status_report.c): groups of identifiers, each with
a status (> 0 ready, < 0 not ready), an optional detail text and a log of its last
reports. The supervisor owns the only writer (StatusBoard) and rewrites the file (a
temporary file, then rename: readers see the old or the new board, never half of one);
every process that answers MI reads it (read_board), so readiness is the same whichever
HTTP worker, FIFO or datagram process answers.

Order as OpenSIPS lists them: a new group or identifier goes first (OpenSIPS links each
new one at the head of its list), so `core` comes last.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# OpenSIPS's enum sr_core_states (status_report.h)
STATE_TERMINATING, STATE_INITIALIZING, STATE_RUNNING = -2, -1, 1
SR_READY, SR_NOT_READY = 1, -1  # enum sr_status: the aggregated status of a group
CORE, MAIN = "core", "main"
MAX_REPORTS = 10  # per identifier, the oldest dropped first (OpenSIPS keeps 10 for core)


@dataclass
class Identifier:
    name: str
    status: int
    details: str | None = None
    reports: list[tuple[int, str]] = field(default_factory=list)  # (unix time, log)

    @property
    def ready(self) -> bool:
        return self.status > 0


@dataclass
class Group:
    name: str
    identifiers: list[Identifier] = field(default_factory=list)


def initial_board() -> list[Group]:
    """A server that is answering and knows no better: core/main running (what a process
    serving MI without a supervisor, e.g. in tests or embedded, reports)."""
    return [Group(CORE, [Identifier(MAIN, STATE_RUNNING, "running")])]


class StatusBoard:
    """The writer: the supervisor's, one per server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: list[Group] = [Group(CORE, [Identifier(MAIN, STATE_INITIALIZING,
                                                            "initializing")])]
        self.add_report(CORE, MAIN, "initializing")

    def _find(self, group: str, name: str) -> Identifier | None:
        for g in self.groups:
            if g.name == group:
                for ident in g.identifiers:
                    if ident.name == name:
                        return ident
        return None

    def register(self, group: str, name: str, status: int, details: str | None) -> None:
        """A new identifier (and its group when new), first in its list; written."""
        for g in self.groups:
            if g.name == group:
                g.identifiers.insert(0, Identifier(name, status, details))
                break
        else:
            self.groups.insert(0, Group(group, [Identifier(name, status, details)]))
        self.write()

    def set_status(self, group: str, name: str, status: int, details: str | None) -> None:
        ident = self._find(group, name)
        if ident is None:
            raise KeyError(f"{group}/{name}")
        if (ident.status, ident.details) != (status, details):
            ident.status, ident.details = status, details
            self.write()

    def add_report(self, group: str, name: str, log: str) -> None:
        ident = self._find(group, name)
        if ident is None:
            raise KeyError(f"{group}/{name}")
        ident.reports.append((int(time.time()), log))
        del ident.reports[:-MAX_REPORTS]
        self.write()

    def write(self) -> None:
        data = [{"name": g.name, "identifiers": [
            {"name": i.name, "status": i.status, "details": i.details,
             "reports": i.reports} for i in g.identifiers]} for g in self.groups]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)


class BoardReader:
    """The readers' side: the board as last written, parsed again only when the file was
    replaced (one stat per read otherwise)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._groups: list[Group] = []

    def __call__(self) -> list[Group]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:  # removed at the very end of a stop
            return [Group(CORE, [Identifier(MAIN, STATE_TERMINATING, "shutting down")])]
        key = (st.st_ino, st.st_mtime_ns)
        if key != self._seen:
            try:
                self._groups = parse_board(self.path.read_text())
            except FileNotFoundError:
                return [Group(CORE, [Identifier(MAIN, STATE_TERMINATING, "shutting down")])]
            self._seen = key
        return self._groups


def parse_board(text: str) -> list[Group]:
    return [Group(g["name"], [Identifier(i["name"], int(i["status"]), i["details"],
                                         [(int(t), str(log)) for t, log in i["reports"]])
                              for i in g["identifiers"]])
            for g in json.loads(text)]


def core_readiness(groups: list[Group]) -> tuple[bool, str]:
    """core/main's readiness and its detail text (what GET /health answers)."""
    for g in groups:
        if g.name == CORE:
            for ident in g.identifiers:
                if ident.name == MAIN:
                    return ident.ready, ident.details or ""
    return False, "no core status"
