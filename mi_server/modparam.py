"""Parse an OpenSIPS `mqueue` modparam string ("name=q;size=20;addmode=2;dbmode=1").

The grammar is OpenSIPS's (docs/configuration.md, "mqueue"). The string is split into raw attributes
here; `build_spec` turns attributes (from this parser or from a YAML mapping) into a
QueueSpec, so both configuration forms share one validator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mi_server.engine.spec import QueueSpec

ATTRIBUTES = ("name", "size", "addmode", "dbmode")
INTEGER_ATTRIBUTES = ("size", "addmode", "dbmode")

_SPACE = " \t\r\n"
_TOKEN_END = " \t\r\n,;"
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
# OpenSIPS keeps these in a C int; anything wider would wrap there, so refuse it here.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class ModparamError(ValueError):
    """A queue definition is invalid; `problems` holds one short line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_modparam(text: str) -> QueueSpec:
    """The QueueSpec a modparam string defines; ModparamError when it is malformed."""
    return build_spec(split_modparam(text))


def split_modparam(text: str) -> dict[str, str]:
    """Raw `attribute -> value` pairs (names lower-cased, the last repeat wins)."""
    # OpenSIPS drops exactly one trailing ';' before parsing; a second one (or a ';'
    # followed by blanks) then looks like an empty attribute, which is an error.
    body = text[:-1] if text.endswith(";") else text
    if not body:
        raise ModparamError(["empty definition"])
    if body[0] in _SPACE:
        raise ModparamError(["leading whitespace is not allowed"])
    attrs: dict[str, str] = {}
    pos = 0
    while True:
        start = pos
        while pos < len(body) and body[pos] not in _SPACE + "=;,":
            pos += 1
        name = body[start:pos]
        if not name:
            raise ModparamError([_where(body, start, "attribute name expected")])
        pos = _skip_space(body, pos)
        if pos >= len(body) or body[pos] != "=":
            raise ModparamError([f"{name}: '=' expected after the attribute name"])
        pos = _skip_space(body, pos + 1)
        value, pos = _value(body, pos, name)
        attrs[name.lower()] = value
        pos = _skip_space(body, pos)
        if pos >= len(body):
            return attrs
        if body[pos] == ",":
            # OpenSIPS silently stops at a ','; ours refuses it (it hides typos).
            raise ModparamError([_where(body, pos, "',' is not a separator, use ';'")])
        if body[pos] != ";":
            raise ModparamError([_where(body, pos, "';' expected")])
        pos = _skip_space(body, pos + 1)
        if pos >= len(body):
            raise ModparamError(["empty attribute after ';' (only one trailing ';' is allowed)"])


def build_spec(attrs: Mapping[str, object]) -> QueueSpec:
    """Validate attributes (strings, or ints from YAML) and build the QueueSpec."""
    problems: list[str] = []
    values: dict[str, object] = {}
    for raw_key, raw in attrs.items():
        key = str(raw_key).lower()
        if key not in ATTRIBUTES:
            problems.append(f"unknown attribute '{raw_key}' (expected one of: name, size, "
                            "addmode, dbmode)")
            continue
        if key == "name":
            name = _name(raw)
            if name is None:
                problems.append(f"name: must be a non-empty string, not {raw!r}")
            else:
                values["name"] = name
            continue
        number = _integer(raw)
        if isinstance(number, str):
            problems.append(f"{key}: {number}")
        else:
            values[key] = number
    if "name" not in values and not any(p.startswith("name:") for p in problems):
        problems.insert(0, "name: missing (every queue needs name=...)")
    if problems:
        raise ModparamError(problems)
    return QueueSpec(**values)  # type: ignore[arg-type]


def _skip_space(body: str, pos: int) -> int:
    while pos < len(body) and body[pos] in _SPACE:
        pos += 1
    return pos


def _value(body: str, pos: int, name: str) -> tuple[str, int]:
    """One value at `pos`: a "quoted" string or a bare token; error when there is none."""
    if pos < len(body) and body[pos] == '"':
        end = body.find('"', pos + 1)
        if end < 0:
            raise ModparamError([f"{name}: unterminated quoted value"])
        return body[pos + 1:end], end + 1
    start = pos
    while pos < len(body) and body[pos] not in _TOKEN_END:
        pos += 1
    if pos == start:
        raise ModparamError([f"{name}: empty value after '='"])
    return body[start:pos], pos


def _name(raw: object) -> str | None:
    # YAML reads `name: 123` as an int; the modparam form would give the text "123".
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, str) and raw:
        return raw
    return None


def _integer(raw: object) -> int | str:
    """The integer value, or the text of the problem."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        return f"not an integer: {raw!r}"
    if isinstance(raw, str):
        if not _INT_RE.match(raw):
            return f"not an integer: {raw!r}"
        raw = int(raw)
    if not _INT_MIN <= raw <= _INT_MAX:
        return f"out of range: {raw}"
    return raw


def _where(body: str, pos: int, what: str) -> str:
    return f"{what} at column {pos + 1}: {body[pos:pos + 20]!r}"
