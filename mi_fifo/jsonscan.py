"""A resumable JSON syntax checker: tells "complete", "invalid here" and "unfinished".

`json.JSONDecoder.raw_decode` only says "failed"; the FIFO framer must know whether the bytes
received so far are a prefix of some valid document (wait for more) or can never become one
(answer -32700 at once).  This scanner walks the bytes as a push-down automaton, keeps its
whole state in the object (never the bytes behind it), so it can be resumed as more bytes
arrive and the framer may throw away what it has scanned (used to skip oversize requests).

It accepts the language Python's `json` module accepts (NaN, Infinity, -Infinity included)
plus numbers with leading zeros (which cJSON and the MI core take), so it never calls
invalid what the MI core could parse.
"""

from __future__ import annotations

import re

NEED, DONE, BAD = 0, 1, 2

# what the automaton expects next
_VALUE, _ARR_FIRST, _OBJ_FIRST, _OBJ_KEY, _COLON, _AFTER, _STR, _NUM, _LIT = range(9)
# number sub-states
_N_MINUS, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(8)

_WS_RUN = re.compile(rb"[ \t\r\n]*")
# Raw control characters inside strings are accepted, as the MI core (and cJSON) accept them.
_STR_RUN = re.compile(rb'[^"\\]*')
_DIGITS = re.compile(rb"[0-9]*")
_WS = frozenset(b" \t\r\n")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')
_LITERALS = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull",
             ord("N"): b"aN", ord("I"): b"nfinity"}
_OPEN_OBJ, _OPEN_ARR = ord("{"), ord("[")


class JsonScan:
    """Scan one JSON value starting at `pos` of a growing buffer; see `run`."""

    __slots__ = ("pos", "_stack", "_mode", "_key", "_esc", "_uni", "_num", "_lit")

    def __init__(self, pos: int) -> None:
        self.pos = pos                # next byte to look at (the caller shifts it on compaction)
        self._stack: list[int] = []   # open containers: '{' or '[' byte values
        self._mode = _VALUE
        self._key = False             # the string being scanned is an object key
        self._esc = False             # just saw a backslash inside a string
        self._uni = 0                 # hex digits still expected after \u
        self._num = _N_INT
        self._lit = b""               # rest of a literal (true, null, NaN, ...)

    def run(self, buf: bytes) -> tuple[int, int]:
        """Advance over `buf[self.pos:]`.  Returns (NEED, len) when every byte so far is a valid
        prefix, (DONE, end) with `end` just after the value, or (BAD, index of the bad byte)."""
        i, n = self.pos, len(buf)
        stack = self._stack
        mode = self._mode
        status = NEED
        while i < n:
            c = buf[i]
            if mode == _STR:
                if self._uni:
                    if c not in _HEX:
                        status = BAD
                        break
                    self._uni -= 1
                    i += 1
                    continue
                if self._esc:
                    if c in _ESCAPES:
                        self._esc = False
                    elif c == 0x75:  # u
                        self._esc = False
                        self._uni = 4
                    else:
                        status = BAD
                        break
                    i += 1
                    continue
                i = _STR_RUN.match(buf, i).end()
                if i >= n:
                    break
                c = buf[i]
                if c == 0x22:  # closing quote
                    i += 1
                    if self._key:
                        mode = _COLON
                    elif not stack:
                        status = DONE
                        break
                    else:
                        mode = _AFTER
                elif c == 0x5C:
                    self._esc = True
                    i += 1
                continue
            if mode == _NUM:
                ok, i, mode, status = self._number(buf, i, c, stack)
                if not ok:
                    break
                continue
            if mode == _LIT:
                if c != self._lit[0]:
                    status = BAD
                    break
                self._lit = self._lit[1:]
                i += 1
                if not self._lit:
                    if not stack:
                        status = DONE
                        break
                    mode = _AFTER
                continue
            if c in _WS:
                i = _WS_RUN.match(buf, i).end()
                continue
            if mode == _VALUE or mode == _ARR_FIRST:
                if c == _OPEN_OBJ:
                    stack.append(c)
                    mode = _OBJ_FIRST
                elif c == _OPEN_ARR:
                    stack.append(c)
                    mode = _ARR_FIRST
                elif c == 0x22:
                    mode, self._key = _STR, False
                elif c == 0x2D:  # '-'
                    mode, self._num = _NUM, _N_MINUS
                elif 0x30 <= c <= 0x39:
                    mode, self._num = _NUM, (_N_ZERO if c == 0x30 else _N_INT)
                elif c in _LITERALS:
                    mode, self._lit = _LIT, _LITERALS[c]
                elif c == 0x5D and mode == _ARR_FIRST:  # ']' of an empty array:
                    mode = _AFTER  # closed there, like any container (i not advanced)
                    continue
                else:
                    status = BAD
                    break
                i += 1
            elif mode == _OBJ_FIRST or mode == _OBJ_KEY:
                if c == 0x22:
                    mode, self._key = _STR, True
                elif c == 0x7D and mode == _OBJ_FIRST:  # '}' of an empty object:
                    mode = _AFTER  # closed there, like any container (i not advanced)
                    continue
                else:
                    status = BAD
                    break
                i += 1
            elif mode == _COLON:
                if c != 0x3A:
                    status = BAD
                    break
                mode = _VALUE
                i += 1
            else:  # _AFTER: ',' or the closer of the innermost container
                top = stack[-1]
                if c == 0x2C:
                    mode = _OBJ_KEY if top == _OPEN_OBJ else _VALUE
                elif (c == 0x7D and top == _OPEN_OBJ) or (c == 0x5D and top == _OPEN_ARR):
                    stack.pop()
                    if not stack:
                        i += 1
                        status = DONE
                        break
                else:
                    status = BAD
                    break
                i += 1
        self._mode = mode
        self.pos = i
        return status, i

    def _number(self, buf: bytes, i: int, c: int, stack: list[int]) -> tuple[bool, int, int, int]:
        """One step inside a number: (keep going?, index, mode, status)."""
        st = self._num
        digit = 0x30 <= c <= 0x39
        if st == _N_MINUS:
            if c == 0x49:  # -Infinity
                self._lit = b"nfinity"
                return True, i + 1, _LIT, NEED
            if not digit:
                return False, i, _NUM, BAD
            self._num = _N_ZERO if c == 0x30 else _N_INT
            return True, i + 1, _NUM, NEED
        # _N_ZERO too: a leading zero (01) is taken, as cJSON's strtod and the MI core
        # take it
        if st in (_N_ZERO, _N_INT, _N_FRAC, _N_EXP) and digit:
            return True, _DIGITS.match(buf, i).end(), _NUM, NEED
        if st in (_N_DOT, _N_E, _N_ESIGN):
            if digit:
                self._num = _N_FRAC if st == _N_DOT else _N_EXP
                return True, i + 1, _NUM, NEED
            if st == _N_E and c in (0x2B, 0x2D):
                self._num = _N_ESIGN
                return True, i + 1, _NUM, NEED
            return False, i, _NUM, BAD
        if c == 0x2E and st in (_N_ZERO, _N_INT):
            self._num = _N_DOT
            return True, i + 1, _NUM, NEED
        if c in (0x65, 0x45) and st in (_N_ZERO, _N_INT, _N_FRAC):
            self._num = _N_E
            return True, i + 1, _NUM, NEED
        # any other byte ends the number; it is looked at again as what follows a value
        if not stack:
            return False, i, _NUM, DONE
        return True, i, _AFTER, NEED
