"""A JSON integer longer than Python's int() takes (4,300 digits) is valid JSON: it is
clamped like any other number (cJSON reads it as a double), never answered -32700."""

from __future__ import annotations

import json

import pytest

from mi_server.engine import QueueSpec
from mi_server.mi.jsonvalues import INT_MAX, INT_MIN
from tests.mi.arena_core import arena_core

BIG = "9" * 5000  # beyond sys.get_int_max_str_digits() (4,300 by default)


def request(params: str, id_text: str = "1") -> bytes:
    return (f'{{"jsonrpc":"2.0","method":"mq_fetch","params":{params},"id":{id_text}}}'
            ).encode()


@pytest.mark.parametrize(("id_text", "echoed"), [(BIG, INT_MAX), ("-" + BIG, INT_MIN),
                                                 ("1" + "0" * 4400, INT_MAX)])
def test_a_huge_id_is_echoed_clamped(id_text, echoed):
    with arena_core([QueueSpec("q")], [("q", "k", "v")]) as (core, _):
        reply = json.loads(core.handle(request('["q"]', id_text)))
    assert reply == {"jsonrpc": "2.0", "result": {"Item": {"key": "k", "value": "v"}},
                     "id": echoed}


@pytest.mark.parametrize("limit", [BIG, f'"{BIG}"', f'"+{BIG}"', f'"000{BIG}"'])
def test_a_huge_limit_is_clamped_to_int_max(limit):
    with arena_core([QueueSpec("q")], [("q", "k1", "v1"), ("q", "k2", "v2")]) as (core, _):
        reply = json.loads(core.handle(request(f'["q",{limit}]')))
    assert reply["result"] == [{"key": "k1", "value": "v1"}, {"key": "k2", "value": "v2"}]


@pytest.mark.parametrize("limit", ["-" + BIG, f'"-{BIG}"'])
def test_a_huge_negative_limit_is_a_bad_limit_as_any_below_one(limit):
    with arena_core([QueueSpec("q")], [("q", "k1", "v1")]) as (core, arena):
        reply = json.loads(core.handle(request(f'["q",{limit}]')))
        assert arena.size("q") == 1
    assert reply["error"] == {"code": -32602, "message": "Invalid params",
                              "data": "Bad type for parameter 'limit'"}


def test_a_huge_number_as_a_name_is_its_clamped_integer_text():
    with arena_core([QueueSpec(str(INT_MAX))], [(str(INT_MAX), "k", "v")]) as (core, _):
        reply = json.loads(core.handle(request(f"[{BIG}]")))
    assert reply["result"] == {"Item": {"key": "k", "value": "v"}}


def test_invalid_json_around_a_huge_number_is_still_a_parse_error():
    with arena_core([QueueSpec("q")]) as (core, _):
        reply = json.loads(core.handle(request('["q"]', BIG + "x")))
    assert reply["error"]["code"] == -32700 and reply["id"] is None
