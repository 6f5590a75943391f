"""Typed access to a command's matched parameters, with OpenSIPS's conversions and errors.

Mirrors mi/item.c: a string parameter also takes a number (its 32-bit integer text); an
integer parameter takes a number (truncated) or a string of optional sign + digits; an
array parameter must be a non-empty array whose items are strings or numbers.
"""

from __future__ import annotations

from typing import Any

from mi_server.mi.errors import bad_array_item, bad_type, empty_array
from mi_server.mi.jsonvalues import INT_MAX, INT_MIN, int32, is_number

Params = dict[str, Any]


def _as_text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if is_number(value):
        return str(int32(value))
    return None


def get_str(params: Params, name: str) -> str:
    """The parameter as text; -32602 "Bad type for parameter '<name>'" otherwise."""
    value = params[name]
    if type(value) is str:  # what clients send: no second call (once per request)
        return value
    text = _as_text(value)
    if text is None:
        raise bad_type(name)
    return text


def _digits_to_int(text: str) -> int | None:
    """str2sint: optional sign then ASCII digits only. Ours: clamped, not wrapped, on overflow."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not text or not (body == "" or (body.isascii() and body.isdigit())):
        return None
    # A lone sign is accepted as 0 by str2sint.  Past 11 significant digits the value
    # is out of the 32-bit range whatever they are: clamped without int(), which refuses
    # more than 4,300 digits.
    body = body.lstrip("0")
    value = (int(body) if len(body) <= 11 else INT_MAX + 1) if body else 0
    if text[0] == "-":
        value = -value
    return min(max(value, INT_MIN), INT_MAX)


def get_int(params: Params, name: str) -> int:
    """The parameter as a 32-bit integer; -32602 "Bad type for parameter '<name>'" otherwise."""
    value = params[name]
    if is_number(value):
        return int32(value)
    if type(value) is str:
        number = _digits_to_int(value)
        if number is not None:
            return number
    raise bad_type(name)


def get_str_array(params: Params, name: str) -> list[str]:
    """A non-empty array of strings/numbers, as texts (OpenSIPS's get_mi_array_param)."""
    value = params[name]
    if type(value) is not list:
        raise bad_type(name)
    if not value:
        raise empty_array(name)
    texts = []
    for item in value:
        text = _as_text(item)
        if text is None:
            raise bad_array_item(name)
        texts.append(text)
    return texts
