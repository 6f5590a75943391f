"""Sans-io framer for the mi_fifo byte stream: bytes in, `:REPLY_NAME:` + JSON requests out.

The server keeps its FIFO open read-write, so every writer's bytes arrive as one stream.  A
request is optional whitespace, `:NAME:`, optional whitespace and exactly one JSON object or
array; the next byte starts the next request.  Nothing here touches a file: the listener
feeds bytes with the time and acts on the events (see docs/wire.md, "FIFO").

Rules this implements:
- framing is by a JSON scan (strings, escapes, nesting), never by newlines;
- JSON invalid before the end of the received bytes -> `ParseError` at once; merely
  unfinished -> wait until `idle_timeout` seconds pass without new bytes, then `ParseError`;
- a request over `max_request` bytes -> `Oversize`, and its remaining bytes are skipped by a
  resumable scan, keeping only its last `max_request` bytes: if the scan fails (the writer
  abandoned it and another writer's request was taken for its continuation), framing
  resumes at the first request start in those, wherever the reads split the bytes;
- a reply name containing `.`, `/` or `\\` -> the request is dropped (`Garbage`), never run;
- after anything that is not a request, resume at the next `:NAME:` followed by `{` or `[`,
  so a valid request glued onto garbage is still served and garbage never wedges the stream.

Reply names are `str` from `os.fsdecode` (surrogateescape), so `os.fsencode` gives back the
exact bytes for the reply path.  The empty name is valid: run, no reply.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mi_fifo.jsonscan import BAD, DONE, NEED, JsonScan

NAME_MAX = 255        # a file name longer than this cannot exist, so it is not a header
RESYNC_WS_MAX = 64    # whitespace allowed between `:NAME:` and the JSON when resynchronising
_RESYNC_TAIL = 1 + NAME_MAX + 1 + RESYNC_WS_MAX + 1   # longest request start to look for

_WS = re.compile(rb"[ \t\r\n]*")
_NAME = re.compile(rb"[^:\x00-\x1f\x7f]{0,%d}" % (NAME_MAX + 1))
_START = re.compile(rb":[^:\x00-\x1f\x7f]{0,%d}:[ \t\r\n]{0,%d}[{\[]" % (NAME_MAX, RESYNC_WS_MAX))
_FORBIDDEN = re.compile(rb"[./\\]")
# a whole request header in one match, for the fast path (group 1: the name); a name with
# a forbidden character does not match, so it goes the general way (and is dropped there)
_HEAD = re.compile(rb"[ \t\r\n]*:([^:\x00-\x1f\x7f./\\]{0,%d}):[ \t\r\n]*[{\[]" % NAME_MAX)
_DECODER = json.JSONDecoder(strict=False)  # as the MI core: raw control chars in strings
_SCAN = _DECODER.scan_once                 # raw_decode without its Python wrapper
_COLON = 0x3A
_NEWLINE = 0x0A
_JSON_OPENERS = (0x7B, 0x5B)

_START_STATE, _RESYNC, _SKIP = range(3)
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


class _Unparsed:
    """`Request.value` when the framer did not decode the body (the MI core parses it)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNPARSED"


UNPARSED: Any = _Unparsed()

# The JSON scanner the fast path decodes with: str, index -> (value, end) or StopIteration /
# ValueError, like json.JSONDecoder.scan_once.  The listener passes the MI core's own.
Scan = Callable[[str, int], tuple[Any, int]]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class Request:
    """A complete request: run `body`; reply to `reply_name` unless it is empty.  `value` is
    `body` already decoded by the framer's `scan` (its one JSON pass also found the end),
    or UNPARSED."""
    reply_name: str
    body: bytes
    value: Any = field(default=UNPARSED, compare=False)


@dataclass(frozen=True, slots=True)
class ParseError:
    """The JSON after a valid reply name is invalid or never finished: answer -32700."""
    reply_name: str


@dataclass(frozen=True, slots=True)
class Oversize:
    """A request over max_request bytes with a valid reply name: answer an error, do not run."""
    reply_name: str


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes dropped without an answer (nothing to reply to, or a forbidden reply name)."""
    nbytes: int
    reason: str


FrameEvent = Request | ParseError | Oversize | Garbage


def valid_reply_name(name: bytes) -> bool:
    """OpenSIPS refuses names that could leave the reply directory or hide a suffix."""
    return _FORBIDDEN.search(name) is None


class Framer:
    """Incremental framer; `feed` bytes as they are read, `poll` when `deadline` is reached."""

    def __init__(self, max_request: int = 65536, idle_timeout: float = 1.0,
                 scan: Scan | None = None) -> None:
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        # with a `scan`, whole ASCII requests come out decoded (Request.value)
        self._value_scan = scan
        self._buf = b""
        self._state = _START_STATE
        self._last = 0.0                  # time of the last non-empty feed
        self._scan: JsonScan | None = None  # resumable scan of a pending or skipped value
        self._dropped = 0                 # garbage bytes already thrown away in this run
        self._reason = ""                 # why the current garbage run started

    # -- public API --------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Bytes are held back waiting for the rest of a request (or being skipped)."""
        return bool(self._buf) or self._state == _SKIP

    @property
    def idle(self) -> bool:
        """Between requests: nothing held, no garbage being skipped or resynchronised
        over.  Bytes arriving now start a fresh request (the precondition of the fast
        path here and of the listener's compiled one)."""
        return not self._buf and self._state == _START_STATE and self._scan is None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def deadline(self) -> float | None:
        """When `poll` must be called to time out the held bytes; None if nothing is held."""
        return self._last + self.idle_timeout if self.pending else None

    def feed(self, data: bytes, now: float) -> list[FrameEvent]:
        if not data:
            return []
        if self._state == _RESYNC and not self._buf and now - self._last >= self.idle_timeout:
            self._state = _START_STATE  # after a silence, a new writer starts afresh
        self._last = now
        if self.idle:
            fast = self._one_request(bytes(data))
            if fast is not None:
                return fast
        events: list[FrameEvent] = []
        self._drain(self._buf + data if self._buf else bytes(data), events, final=False)
        return events

    def _one_request(self, data: bytes) -> list[FrameEvent] | None:
        """The common case in one regex and one C scan per request: `data` starts with a
        complete, valid request of an allowed size (several such requests back to back,
        as concurrent clients leave them in the pipe, each take the same shortcut).  None
        when the first is not one; the caller then runs the general path over the same
        bytes (same result, just slower).  Whatever follows the last request taken here
        goes through the general path as usual."""
        n = len(data)
        value_scan = self._value_scan
        if value_scan is not None and data.isascii() and b"\x00" not in data:
            # ASCII: str indices are byte indices, and this one pass both finds the end
            # and decodes the body for the MI core (which would parse it again).  A raw
            # NUL (a parse error to the MI core, as to cJSON, inside a string) goes the
            # undecoded way, so that the core's parse says so.
            scan, text = value_scan, data.decode("ascii")
        else:
            scan, text = _SCAN, data.decode("latin-1")
        events: list[FrameEvent] = []
        pos = 0
        while True:
            m = _HEAD.match(data, pos)
            if m is None:
                break
            v = m.end() - 1
            try:
                value, end = scan(text, v)
            except (StopIteration, ValueError, RecursionError):
                break  # unfinished or invalid: the general path tells which
            name = m.group(1)
            if end - m.start(1) + 1 > self.max_request:
                break
            # os.fsdecode without its Python-level type checks: `name` is bytes
            events.append(Request(name.decode(_FS_ENCODING, _FS_ERRORS), data[v:end],
                                  value if scan is value_scan else UNPARSED))
            pos = end
            # the end, or only whitespace after it (a lone newline, as clients send, is
            # told without a regex call)
            if pos == n or (pos == n - 1 and data[pos] == _NEWLINE) \
                    or _WS.match(data, pos).end() == n:
                return events
        if not events:
            return None
        self._drain(data, events, final=False, pos=pos)  # the rest, the general way
        return events

    def poll(self, now: float) -> list[FrameEvent]:
        """Give up on whatever has waited `idle_timeout` seconds with no new bytes."""
        events: list[FrameEvent] = []
        # each round drops at least the first held byte, so this ends
        while self.pending and now - self._last >= self.idle_timeout:
            self._expire(events)
        return events

    def _expire(self, events: list[FrameEvent]) -> None:
        buf = self._buf
        if self._state == _SKIP:
            # the oversize request was already answered; its tail never came
            self._reset()
        elif self._state == _RESYNC:
            self._garbage(events, len(buf))
            self._reset()
        else:
            # a request start is held at buf[0]: answer it if we can, then rescan after it
            self._scan = None
            name = self._header_name(buf)
            if name is None:
                self._begin_garbage("unfinished request header")
            else:
                self._parse_error(events, name, "unfinished JSON")
            self._state = _RESYNC
            self._drain(buf, events, final=True, pos=1)

    # -- internals ---------------------------------------------------------------------

    def _reset(self) -> None:
        self._buf = b""
        self._state = _START_STATE
        self._scan = None
        self._dropped = 0

    def _begin_garbage(self, reason: str) -> None:
        self._reason = reason
        self._dropped = 1   # the ':' (or first byte) of the failed start is dropped too

    def _garbage(self, events: list[FrameEvent], nbytes: int) -> None:
        total = self._dropped + nbytes
        if total:
            events.append(Garbage(total, self._reason))
        self._dropped = 0

    def _parse_error(self, events: list[FrameEvent], name: bytes, reason: str) -> None:
        if valid_reply_name(name):
            events.append(ParseError(os.fsdecode(name)))
            self._begin_garbage(reason)
        else:
            self._begin_garbage(f"{reason}, forbidden reply name {name!r}")

    @staticmethod
    def _header_name(buf: bytes) -> bytes | None:
        """The name of a complete `:NAME:` header at buf[0], else None."""
        m = _NAME.match(buf, 1)
        e = m.end()
        if e < len(buf) and buf[e] == _COLON and e - 1 <= NAME_MAX:
            return buf[1:e]
        return None

    def _drain(self, buf: bytes, events: list[FrameEvent], final: bool, pos: int = 0) -> None:
        """Frame as much of `buf` as possible from `pos`; keep the rest for later.

        `final` (idle timeout) means no more bytes will complete what is held: partial
        request starts found while resynchronising are dropped instead of kept."""
        n = len(buf)
        text: str | None = None  # latin-1 view: one char per byte, so indices match
        while pos < n:
            state = self._state
            if state == _SKIP:
                scan = self._scan
                assert scan is not None
                status, i = scan.run(buf)
                if status == NEED:
                    pos = self._window(pos, n)
                    break
                self._scan = None
                if status == DONE:
                    self._state = _START_STATE
                    pos = i
                else:
                    # the oversize request was abandoned (or is invalid): the next one may
                    # have started inside what was skipped, so look from the window on
                    self._state = _RESYNC
                    self._begin_garbage("invalid JSON in an oversize request")
                    pos = self._window(pos, i)
                continue

            if state == _RESYNC:
                m = _START.search(buf, pos)
                if m is not None:
                    self._garbage(events, m.start() - pos)
                    pos = m.start()
                    self._state = _START_STATE
                    continue
                # keep only what could still become a request start
                keep = -1 if final else buf.find(b":", max(pos, n - _RESYNC_TAIL))
                if keep < 0:
                    # stay in resync: what comes next in this burst is looked for, not
                    # assumed to start a request (so read boundaries change nothing)
                    self._garbage(events, n - pos)
                    self._buf = b""
                    return
                self._dropped += keep - pos
                pos = keep
                break

            # _START_STATE
            p = _WS.match(buf, pos).end()
            if p == n:
                pos = n  # whitespace between requests (a trailing newline) is dropped
                break
            if buf[p] != _COLON:
                self._state = _RESYNC
                self._begin_garbage("not a request start")
                pos = p + 1
                continue
            e = _NAME.match(buf, p + 1).end()
            if e == n and e - p - 1 <= NAME_MAX:
                pos = p  # header not finished yet
                break
            if e == n or buf[e] != _COLON or e - p - 1 > NAME_MAX:
                self._state = _RESYNC
                self._begin_garbage("bad request header")
                pos = p + 1
                continue
            name = buf[p + 1:e]
            v = _WS.match(buf, e + 1).end()
            if v == n:
                if n - p > self.max_request:
                    # endless whitespace after the header: too large like any request;
                    # skip the rest of it and the value that may follow
                    self._scan = JsonScan(n)
                    self._oversize(events, name)
                    pos = self._window(p + 1, n)
                    break
                pos = p  # the JSON has not started yet
                break
            if buf[v] not in _JSON_OPENERS:
                self._state = _RESYNC
                if v - p > self.max_request:  # the whitespace alone was over the limit
                    self._oversize(events, name, skip=False)
                    self._begin_garbage("not a JSON object or array in an oversize request")
                    pos = self._window(p + 1, v)
                else:
                    self._parse_error(events, name, "not a JSON object or array")
                    pos = p + 1
                continue

            # the common case: the whole value is here; let the C decoder find its end
            end = -1
            if self._scan is None:
                if text is None:
                    text = buf.decode("latin-1")
                try:
                    end = _SCAN(text, v)[1]
                except (StopIteration, ValueError, RecursionError):
                    end = -1
            if end < 0:
                # unfinished or invalid: the resumable scan tells which
                if self._scan is None:
                    self._scan = JsonScan(v)
                status, i = self._scan.run(buf)
                if status == NEED:
                    if n - p > self.max_request:
                        self._oversize(events, name)
                        pos = self._window(p + 1, n)
                        break
                    pos = p  # hold the request from its ':'
                    break
                self._scan = None
                if status == BAD:
                    self._state = _RESYNC
                    if i - p > self.max_request:
                        # over the limit before it went wrong: what the same bytes read
                        # in smaller pieces give (Oversize, then the skip fails at i)
                        self._oversize(events, name, skip=False)
                        self._begin_garbage("invalid JSON in an oversize request")
                        pos = self._window(p + 1, i)
                    else:
                        self._parse_error(events, name, "invalid JSON")
                        pos = p + 1
                    continue
                end = i
            self._scan = None
            if end - p > self.max_request:
                self._state = _START_STATE
                self._oversize(events, name, skip=False)
            elif valid_reply_name(name):
                events.append(Request(os.fsdecode(name), buf[v:end]))
            else:
                events.append(Garbage(end - p, f"forbidden reply name {name!r}"))
            pos = end

        self._buf = buf[pos:] if pos < n else b""
        if self._scan is not None:
            self._scan.pos -= pos

    def _window(self, start: int, end: int) -> int:
        """Where to keep the bytes of an oversize request being skipped from, up to `end`:
        its last `max_request` bytes (not before `start`).

        If the request turns out to be abandoned (the scan finds invalid JSON at `end`:
        another writer's request was taken for its continuation), the next request may
        have started anywhere in there, and is looked for from the window's start.  A
        fixed window from the failure point, not from the reads, so the same bytes frame
        the same whatever the read boundaries; a request that started further back would
        be over the limit itself."""
        return max(start, end - self.max_request)

    def _oversize(self, events: list[FrameEvent], name: bytes, skip: bool = True) -> None:
        if valid_reply_name(name):
            events.append(Oversize(os.fsdecode(name)))
        else:
            events.append(Garbage(self.max_request, f"oversize request, forbidden name {name!r}"))
        if skip:
            self._state = _SKIP  # self._scan goes on over the rest of the value
