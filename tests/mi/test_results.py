"""mi_server.mi.results.success is jsonrpcserver's Success, only built faster."""

from __future__ import annotations

import pytest
from jsonrpcserver.result import Success, SuccessResult
from oslash.either import Left, Right

from mi_server.mi.results import success


@pytest.mark.parametrize("value", [None, 0, "OK", [1, "a"], {"Queue": {"name": "q", "size": 3}}])
def test_success_is_jsonrpcservers_success(value):
    made, reference = success(value), Success(value)
    assert made == reference
    assert type(made) is type(reference) is Right
    assert type(made._value) is SuccessResult
    assert made._value.result is value
    assert made._value == reference._value
    assert not isinstance(made, Left)


def test_success_is_a_new_object_each_time():
    first, second = success("x"), success("x")
    assert first is not second
    assert first._value is not second._value
