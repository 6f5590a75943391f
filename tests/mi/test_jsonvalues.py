"""The writer's escaping matches cJSON's print_string_ptr; ids clamp like cJSON's valueint."""

from __future__ import annotations

import pytest

from mi_server.mi.jsonvalues import ParseError, encode, int32, parse, to_bytes
from mi_server.mi.params import _digits_to_int

ESCAPES = [
    ("tab", "\t", '"\\t"'),
    ("newline", "\n", '"\\n"'),
    ("carriage_return", "\r", '"\\r"'),
    ("backspace", "\b", '"\\b"'),
    ("formfeed", "\f", '"\\f"'),
    ("quote", '"', '"\\""'),
    ("backslash", "\\", '"\\\\"'),
    ("control_byte_lowercase_hex", "\x01\x1f", '"\\u0001\\u001f"'),
    ("nul", "\x00", '"\\u0000"'),
    ("del_is_raw", "\x7f", '"\x7f"'),
    ("slash_is_raw", "/", '"/"'),
    ("non_ascii_is_raw_utf8", "é€😀", '"é€😀"'),
    ("percent_is_literal", "%s%%", '"%s%%"'),
    ("line_separator_is_raw", "\u2028", '"\u2028"'),
]


@pytest.mark.parametrize(("text", "want"), [e[1:] for e in ESCAPES], ids=[e[0] for e in ESCAPES])
def test_string_escaping_matches_cjson(text, want):
    assert encode(text) == want


def test_lone_surrogate_is_written_as_escape_and_output_is_utf8():
    assert to_bytes(encode("a\ud800b\udfff")) == b'"a\\ud800b\\udfff"'


@pytest.mark.parametrize(
    ("number", "want"),
    [(1.9, 1), (-1.9, -1), (0.5, 0), (2147483647, 2147483647), (2147483648, 2147483647),
     (1e300, 2147483647), (float("inf"), 2147483647), (-2147483648, -2147483648),
     (-2147483649, -2147483648), (float("-inf"), -2147483648), (10**30, 2147483647)],
)
def test_int32_truncates_and_clamps(number, want):
    assert int32(number) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [("3", 3), ("+3", 3), ("-3", -3), ("007", 7), ("+", 0), ("", None), ("3x", None),
     (" 3", None), ("1.5", None), ("٣", None), ("99999999999", 2147483647)],
)
def test_limit_text_is_sign_and_ascii_digits(text, want):
    assert _digits_to_int(text) == want


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"NaN", b"[Infinity]", b'{"a":-Infinity}', b"\xff", b"\xef\xbb\xbf{}",
     b"[" * 100000],
    ids=["empty", "unfinished", "nan", "infinity", "neg_infinity", "bad_utf8", "bom",
         "too_deep"],
)
def test_parse_errors(data):
    with pytest.raises(ParseError):
        parse(data)


@pytest.mark.parametrize("data", [b"[1] [2]", b"[1] x", b" [1]\n}"])
def test_parse_takes_the_first_value_and_ignores_what_follows(data):
    # as OpenSIPS's cJSON_ParseWithOpts(..., require_null_terminated=0)
    assert parse(data) == [1]
