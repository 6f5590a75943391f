"""Loader for the byte-exact MI transcripts in compat/transcripts/*.txt (format: README.md).

Used by tests/mi/test_compat.py (straight through MICore.handle) and by the HTTP/FIFO replays
against a real server process; it only parses, it runs nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

TRANSCRIPT_DIR = Path(__file__).resolve().parent / "transcripts"


@dataclass
class Step:
    """One request and what must come back."""

    request: bytes
    status: int  # HTTP status for the HTTP replay: 200 reply, 202 notification (no body)
    reply: bytes | None = None  # exact bytes; None with status 202
    reply_pattern: re.Pattern[bytes] | None = None  # instead of `reply`, for clocks/pids/paths
    # over the datagram transport, where its bytes differ (a `<<d` line): the reply
    # datagram, or None for no reply; unset (datagram_differs False): as over HTTP
    datagram: bytes | None = None
    datagram_differs: bool = False

    def matches(self, got: bytes | None) -> bool:
        if self.reply_pattern is not None:
            return got is not None and self.reply_pattern.fullmatch(got) is not None
        return got == self.reply


@dataclass
class Case:
    name: str
    source: str  # "file.txt:line"
    queues: list[dict] = field(default_factory=list)  # QueueSpec fields, definition order
    items: list[tuple[str, str, str]] = field(default_factory=list)  # (queue, key, value)
    steps: list[Step] = field(default_factory=list)


class TranscriptError(ValueError):
    pass


def _step(kind: str, rest: str, where: str) -> Step:
    status_text, _, body = rest.partition(" ")
    if not status_text.isdigit():
        raise TranscriptError(f"{where}: expected '<<< STATUS [BODY]'")
    status = int(status_text)
    if kind == "<<~":
        return Step(b"", status, reply_pattern=re.compile(body.encode()))
    return Step(b"", status, reply=body.encode() if status != 202 else None)


def parse_transcript(text: str, source: str) -> list[Case]:
    cases: list[Case] = []
    case: Case | None = None
    pending: bytes | None = None
    for lineno, raw in enumerate(text.split("\n"), 1):
        where = f"{source}:{lineno}"
        line = raw
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("=== "):
            if pending is not None:
                raise TranscriptError(f"{where}: request without a reply")
            case = Case(name=line[4:].strip(), source=where)
            cases.append(case)
            continue
        if case is None:
            raise TranscriptError(f"{where}: content before the first '=== name'")
        tag, _, rest = line.partition(" ")
        if tag == "queue:":
            case.queues.append(json.loads(rest))
        elif tag == "item:":
            q, k, v = json.loads(rest)
            case.items.append((q, k, v))
        elif tag == ">>>":
            pending = rest.encode("utf-8")
        elif tag == ">>x":
            pending = bytes.fromhex(rest)
        elif tag == "<<d":
            if not case.steps or pending is not None:
                raise TranscriptError(f"{where}: '<<d' must follow a step's reply")
            step = case.steps[-1]
            step.datagram, step.datagram_differs = (rest.encode() or None), True
        elif tag in ("<<<", "<<~"):
            if pending is None:
                raise TranscriptError(f"{where}: reply without a request")
            step = _step(tag, rest, where)
            step.request = pending
            case.steps.append(step)
            pending = None
        else:
            raise TranscriptError(f"{where}: unknown line {line[:20]!r}")
    if pending is not None:
        raise TranscriptError(f"{source}: the last request has no reply")
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise TranscriptError(f"{source}: case names used twice: {sorted(dupes)}")
    return cases


def load_all(directory: Path = TRANSCRIPT_DIR) -> list[Case]:
    """Every case of every *.txt transcript, file by file in name order."""
    cases: list[Case] = []
    for path in sorted(directory.glob("*.txt")):
        cases.extend(parse_transcript(path.read_text(encoding="utf-8"), path.name))
    return cases
