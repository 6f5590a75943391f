"""JSON text <-> Python values the way OpenSIPS's cJSON sees them, plus the compact writer.

Objects are decoded to `JObject` (an ordered list of member pairs) instead of dict because
OpenSIPS reads top-level members case-insensitively with the FIRST duplicate winning, and
counts duplicate named params; `json.loads` into a dict would keep the LAST duplicate.
"""

from __future__ import annotations

import json
import re
from typing import Any

INT_MAX = 2147483647
INT_MIN = -2147483648


class JObject:
    """A decoded JSON object: its members in document order, duplicates kept."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def __repr__(self) -> str:
        return f"JObject({self.pairs!r})"


def _reject_constant(name: str) -> Any:
    # cJSON has no NaN/Infinity literals; json.loads would accept them.
    raise ValueError(f"bad literal {name}")


# strict=False: cJSON takes raw control characters inside strings, so do we.
_decoder = json.JSONDecoder(
    object_pairs_hook=JObject, parse_constant=_reject_constant, strict=False
)
_decode = _decoder.decode

# Compact, raw UTF-8, exactly cJSON's escapes: \" \\ \b \f \n \r \t, other < 0x20 as \u00xx
# (lowercase hex), nothing else escaped. allow_nan=False: a non-finite float is a bug.
encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
).encode

_SURROGATE = re.compile("[\ud800-\udfff]")


class ParseError(ValueError):
    """The request bytes are not one JSON value (or not UTF-8)."""


def parse(data: bytes) -> Any:
    """Decode one JSON value; objects become JObject. Raises ParseError."""
    try:
        # Decoded strictly ourselves: json.loads(bytes) would guess UTF-16/32 from the bytes.
        return _decode(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ParseError(str(exc)) from None


def to_bytes(text: str) -> bytes:
    """UTF-8 bytes of a reply; a lone surrogate (legal in a JSON string, not in UTF-8) is
    written back as its \\uXXXX escape so the reply stays valid UTF-8 and round-trips."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Surrogates only ever occur inside strings, so escaping them in place is safe.
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def int32(number: int | float) -> int:
    """cJSON's `valueint`: truncate toward zero, clamp to the signed 32-bit range."""
    if number >= INT_MAX:
        return INT_MAX
    if number <= INT_MIN:
        return INT_MIN
    return int(number)


def is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true/false are not numbers.
    return (type(value) is int) or (type(value) is float)
