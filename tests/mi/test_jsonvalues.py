"""The writer's escaping matches cJSON's print_string_ptr; ids clamp like cJSON's valueint."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mi_server.mi import jsonvalues
from mi_server.mi.jsonvalues import (
    ParseError,
    _stdlib_encode,
    encode,
    encode_str,
    int32,
    parse,
    to_bytes,
)
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


# encode() is orjson with the stdlib's C encoder behind it for what orjson refuses; the
# bytes must be the ones the stdlib encoder (the reference the escapes above pin) writes.

def test_every_code_point_is_written_as_the_stdlib_encoder_writes_it():
    points = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF]
    points += [0x10000, 0x1F600, 0x10FFFF]
    for start in range(0, len(points), 512):
        text = "".join(map(chr, points[start:start + 512]))
        # orjson against the stdlib's string encoder (which _stdlib_encode uses for a str)
        assert encode(text) == encode_str(text)
        assert encode({text: [text]}) == _stdlib_encode({text: [text]})


# what MI commands return (no floats: see test_floats_are_written_in_orjsons_form)
any_text = st.text(st.characters(exclude_categories=()))  # lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | any_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(any_text, inner, max_size=5),
    max_leaves=25,
)


@given(json_values)
def test_any_reply_value_is_written_as_the_stdlib_encoder_writes_it(value):
    # big ints and lone surrogates take the fallback; the rest orjson
    assert encode(value) == _stdlib_encode(value)


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@pytest.mark.parametrize("value", [
    2**64, -(2**63) - 1,          # beyond orjson's 64 bits
    {1: "a", None: "b"},          # keys that are not str (the stdlib converts them)
    Level.HIGH, [Level.HIGH],     # int subclass
    Name("x"), {Name("k"): 1},    # str subclass
    (1, "a"),                     # a tuple is an array
], ids=["int_2_64", "int_below_min", "non_str_keys", "intenum", "intenum_in_list",
        "str_subclass", "str_subclass_key", "tuple"])
def test_what_orjson_refuses_or_passes_through_is_written_as_before(value):
    assert encode(value) == _stdlib_encode(value)


def test_reply_values_are_written_by_orjson_not_the_fallback(monkeypatch):
    # the equality tests above would pass with the fallback doing everything
    def fallback(value):
        raise AssertionError(f"fallback used for {value!r}")

    text = "".join(map(chr, range(0x20))) + "\x7f\u2028\u2029\U0001F600"
    values = [{"Queue": {"name": "q", "size": 3}}, [{"key": text, "value": text}],
              {text: [None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1]}, "OK", {}, []]
    want = [_stdlib_encode(v) for v in values]
    monkeypatch.setattr(jsonvalues, "_stdlib_encode", fallback)
    assert [jsonvalues.encode(v) for v in values] == want


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [object(), Point(1), datetime.datetime(2026, 1, 1)],
                         ids=["object", "dataclass", "datetime"])
def test_types_json_cannot_write_are_still_refused(value):
    # orjson would write dataclasses and datetimes; passed through, the stdlib refuses them
    with pytest.raises(TypeError):
        encode({"when": value})


def test_floats_are_written_in_orjsons_form():
    # no MI command returns a float; this pins the form should one start to
    assert encode([0.5, 1e300, 5.960464477539063e-08]) == "[0.5,1e+300,5.960464477539063e-8]"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_float_is_null_as_cjson_prints_it(value):
    # only a bug could put one in a reply; cJSON_Print writes null for it
    assert encode([value]) == "[null]"


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
