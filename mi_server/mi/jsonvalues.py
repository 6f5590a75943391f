"""JSON text <-> Python values the way OpenSIPS's cJSON sees them, plus the compact writer.

Objects are decoded to `JObject` (a tuple of member pairs, in order) instead of dict because
OpenSIPS reads top-level members case-insensitively with the FIRST duplicate winning, and
counts duplicate named params; `json.loads` into a dict would keep the LAST duplicate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

INT_MAX = 2147483647
INT_MIN = -2147483648


# A decoded JSON object: the tuple of its (name, value) members in document order,
# duplicates kept.  JSON arrays decode to lists, so the type alone tells the two apart.
# The decoder's hook is the tuple type itself, so each object is built in C (a class of
# our own cost a Python __init__ per object: 1.4 % of a FIFO request's instructions).
JObject = tuple


def _reject_constant(name: str) -> Any:
    # cJSON has no NaN/Infinity literals; json.loads would accept them.
    raise ValueError(f"bad literal {name}")


# strict=False: cJSON takes raw control characters inside strings, so do we.
_decoder = json.JSONDecoder(
    object_pairs_hook=JObject, parse_constant=_reject_constant, strict=False
)
# The C scanner itself: JSONDecoder.decode wraps it in two regex calls and a method call,
# about as costly again as scanning a small request.
_scan_once = _decoder.scan_once
# Public name for transports that decode while framing: scan_value(text, idx) -> (the value
# at text[idx] decoded exactly as `parse` decodes it, the index after it); StopIteration or
# ValueError when there is none.  The C scanner itself, not a wrapper (hot path).
scan_value: Callable[[str, int], tuple[Any, int]] = _scan_once
_WS = " \t\n\r"  # JSON whitespace, the same set JSONDecoder.decode skips


def _big_int(digits: str) -> int | float:
    """An integer literal as the decoder's parse_int: Python's int() refuses more than
    sys.get_int_max_str_digits() digits (4,300), and cJSON reads such a number as a double
    anyway (strtod: +-inf beyond ~309 digits), which every use clamps to 32 bits
    (int32).  So a literal too long for int() becomes float(), which never refuses."""
    try:
        return int(digits)
    except ValueError:
        return float(digits)


# Used only when the plain scanner raised (ValueError: most often invalid JSON, which
# fails here again): a parse_int hook costs a Python call per integer, so it stays off
# the path of every valid request.
_clamping_scan = json.JSONDecoder(
    object_pairs_hook=JObject, parse_constant=_reject_constant, strict=False,
    parse_int=_big_int,
).scan_once


def _make_encoder() -> Callable[[Any], str]:
    r"""Compact, raw UTF-8, exactly cJSON's escapes: \" \\ \b \f \n \r \t, other < 0x20 as
    \u00xx (lowercase hex), nothing else escaped.  allow_nan=False: a non-finite float is a
    bug.  The C encoder is built once here instead of on every JSONEncoder.encode call;
    the output is the same (JSONEncoder.encode builds this very encoder for each call)."""
    py = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no _json accelerator: the stdlib's own (slower) path
        return py.encode
    chunks = make(None, py.default, json.encoder.encode_basestring, None,
                  py.key_separator, py.item_separator, False, False, False)
    string = json.encoder.encode_basestring
    join = "".join

    def encode(value: Any) -> str:
        if type(value) is str:
            return string(value)
        return join(chunks(value, 0))

    return encode


_stdlib_encode = _make_encoder()
# orjson writes only the types below itself; everything else (subclasses, dataclasses,
# datetimes, ...) goes to the stdlib encoder, which accepts or refuses it as before
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_DATETIME)


def encode(value: Any) -> str:
    """The compact JSON text of a reply value, with exactly cJSON's escapes.

    orjson does the work, 4-10x faster than the stdlib's C encoder (175 vs 732 ns for
    mq_get_size's result, 30 vs 294 µs for 1,000 fetched items), with the same bytes for
    str, int, bool, None, dict and list (every code point compared:
    tests/mi/test_jsonvalues.py).  What it refuses — a lone surrogate (not UTF-8), an
    int beyond 64 bits, a non-str key, nesting deeper than 254, and the passthrough types
    (subclasses, dataclasses, datetimes) — goes to the stdlib encoder, which writes or
    refuses it as before.  Values no MI command returns are written differently: floats
    in orjson's form (5.960464477539063e-8 and 0.00001 where the stdlib wrote e-08 and
    1e-05; cJSON's %1.15g/%1.17g matches neither), a non-finite float as null, as cJSON
    prints it (the stdlib, allow_nan=False, raised — and still does when it gets the value
    as the fallback), and a UUID or a plain Enum member, which the stdlib refused."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError included
        return _stdlib_encode(value)


def encode_fast(value: Any) -> bytes:
    """`encode(value)` as UTF-8 bytes when orjson writes it (then the same bytes as
    `to_bytes(encode(value))`); TypeError for what only encode's slower fallback writes
    (a lone surrogate, ...).  For a caller that must not take the slow path: the FIFO's
    held mq_fetch encodes with the engine locked."""
    return orjson.dumps(value, option=_ORJSON_OPTIONS)


# encode() of a value known to be a str: json's string encoder itself (C when _json is
# there), without encode's Python frame (hot path)
encode_str: Callable[[str], str] = json.encoder.encode_basestring

_SURROGATE = re.compile("[\ud800-\udfff]")


# cJSON reads a number with strtod, which takes leading zeros ("id":01 is 1, measured on
# OpenSIPS 3.6.8); JSON and Python's scanner do not.  Used only after a scan failed: the
# zeros are dropped from every number outside a string and the text scanned again.
_STRING_OR_LEADING_ZEROS = re.compile(
    r'"(?:[^"\\]|\\.)*"|(?<![0-9A-Za-z.+\-])(-?)0+(?=[0-9])', re.DOTALL)


def _without_leading_zeros(text: str) -> str:
    return _STRING_OR_LEADING_ZEROS.sub(
        lambda m: m.group(0) if m.group(1) is None else m.group(1), text)


class ParseError(ValueError):
    """The request bytes are not one JSON value (or not UTF-8)."""


def parse(data: bytes) -> Any:
    """Decode the first JSON value; objects become JObject. Raises ParseError."""
    try:
        # Decoded strictly ourselves: json.loads(bytes) would guess UTF-16/32 from the bytes.
        text = data.decode("utf-8").lstrip(_WS)
    except ValueError as exc:  # UnicodeDecodeError
        raise ParseError(str(exc)) from None
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:  # no JSON value at the start (empty input included)
        raise ParseError("Expecting value") from None
    except RecursionError as exc:
        raise ParseError(str(exc)) from None
    except ValueError:
        # e.g. an integer of more than 4,300 digits, which is valid JSON: int() refuses
        # it, _big_int does not (see there); or a number with leading zeros, which cJSON
        # takes; invalid JSON fails again here
        try:
            value, end = _clamping_scan(text, 0)
        except (StopIteration, ValueError, RecursionError):
            text = _without_leading_zeros(text)
            try:
                value, end = _clamping_scan(text, 0)
            except (StopIteration, ValueError, RecursionError) as exc:
                raise ParseError(str(exc) or "Expecting value") from None
    # A raw NUL inside a string ends cJSON's text there: a parse error (measured on
    # OpenSIPS 3.6.8); outside a string it cannot be part of valid JSON anyway.
    if "\x00" in text and "\x00" in text[:end]:
        raise ParseError("raw NUL in a string")
    # Bytes after the first value are ignored, as OpenSIPS's cJSON_ParseWithOpts(...,
    # require_null_terminated=0) ignores them.
    return value


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
