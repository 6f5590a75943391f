"""The `mqueue` modparam string rules (docs/configuration.md, "mqueue"), as a table."""

from __future__ import annotations

import pytest

from mi_server.engine.spec import QueueSpec
from mi_server.modparam import ModparamError, build_spec, parse_modparam

VALID = [
    ("name=q", QueueSpec("q")),
    ("name=q;", QueueSpec("q")),
    ("name=myq;size=20;addmode=2;dbmode=1", QueueSpec("myq", 20, 2, 1)),
    ("name=myq;size=20;addmode=2;dbmode=1;", QueueSpec("myq", 20, 2, 1)),
    ("NAME=q;Size=5;ADDMODE=1;DbMode=3", QueueSpec("q", 5, 1, 3)),
    ("name=a;name=b", QueueSpec("b")),
    ("name=q;size=1;size=7", QueueSpec("q", 7)),
    ("name = q ; size = 3", QueueSpec("q", 3)),
    ("name=q\t;\tsize=\t3", QueueSpec("q", 3)),
    ("name=q ", QueueSpec("q")),
    ("name=q \t\r\n", QueueSpec("q")),
    ("name=q ;", QueueSpec("q")),
    ("name=q;size=3 ;", QueueSpec("q", 3)),
    ('name="my q";size="12"', QueueSpec("my q", 12)),
    ('name="a;b,c"', QueueSpec("a;b,c")),
    ("name=Q", QueueSpec("Q")),
    ("name=q;size=-5", QueueSpec("q", -5)),
    ("name=q;size=+5", QueueSpec("q", 5)),
    ("name=q;addmode=9;dbmode=-1", QueueSpec("q", 0, 9, -1)),
    ("name=a=b", QueueSpec("a=b")),
    ("name=123", QueueSpec("123")),
    ("name=é€", QueueSpec("é€")),
]


@pytest.mark.parametrize(("text", "spec"), VALID, ids=[t for t, _ in VALID])
def test_valid_definition_parses(text: str, spec: QueueSpec) -> None:
    assert parse_modparam(text) == spec


INVALID = [
    ("", "empty definition"),
    (";", "empty definition"),
    ("name=q;;", "empty attribute after ';'"),
    ("name=q; ", "empty attribute after ';'"),
    ("name=q;\t", "empty attribute after ';'"),
    (" name=q", "leading whitespace"),
    ("\tname=q", "leading whitespace"),
    ("name=q,size=3", "',' is not a separator"),
    ("name=q;size=3,", "',' is not a separator"),
    ("name=", "name: empty value after '='"),
    ("name=;size=3", "name: empty value after '='"),
    ("name=q;size=", "size: empty value after '='"),
    ("name=q;size= ;", "size: empty value after '='"),
    ("name", "name: '=' expected"),
    ("name=q;size", "size: '=' expected"),
    ("name=q;;size=3", "attribute name expected"),
    ("=q", "attribute name expected"),
    ("name=q;colour=red", "unknown attribute 'colour'"),
    ("name=q;sizes=3", "unknown attribute 'sizes'"),
    ("size=3", "name: missing"),
    ("size=3;addmode=1", "name: missing"),
    ('name=""', "name: must be a non-empty string"),
    ("name=q;size=abc", "size: not an integer: 'abc'"),
    ("name=q;size=1.5", "size: not an integer: '1.5'"),
    ("name=q;size=0x10", "size: not an integer: '0x10'"),
    ("name=q;size=--1", "size: not an integer: '--1'"),
    ("name=q;size=10k", "size: not an integer: '10k'"),
    ('name=q;size=""', "size: not an integer: ''"),
    ("name=q;addmode=one", "addmode: not an integer: 'one'"),
    ("name=q;dbmode=yes", "dbmode: not an integer: 'yes'"),
    ("name=q;size=99999999999", "size: out of range"),
    ('name="q', "name: unterminated quoted value"),
    ('name="q"x', "';' expected"),
    ("name=q x", "';' expected"),
    ("na me=q", "na: '=' expected"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[t or "<empty>" for t, _ in INVALID])
def test_invalid_definition_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ModparamError) as info:
        parse_modparam(text)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_every_problem_of_a_definition_is_reported() -> None:
    with pytest.raises(ModparamError) as info:
        parse_modparam("size=x;addmode=y;foo=1")
    problems = info.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("name: missing")


MAPPINGS = [
    ({"name": "q", "size": 3, "addmode": 2, "dbmode": 1}, QueueSpec("q", 3, 2, 1)),
    ({"Name": "q", "SIZE": "3"}, QueueSpec("q", 3)),
    ({"name": 42}, QueueSpec("42")),
]


@pytest.mark.parametrize(("attrs", "spec"), MAPPINGS)
def test_mapping_goes_through_the_same_validator(attrs: dict, spec: QueueSpec) -> None:
    assert build_spec(attrs) == spec


@pytest.mark.parametrize(("attrs", "message"), [
    ({"name": "q", "size": True}, "size: not an integer: True"),
    ({"name": "q", "size": 1.5}, "size: not an integer: 1.5"),
    ({"name": "q", "size": "1 "}, "size: not an integer: '1 '"),
    ({"name": None}, "name: must be a non-empty string"),
    ({"name": ["q"]}, "name: must be a non-empty string"),
    ({"name": "q", "colour": 1}, "unknown attribute 'colour'"),
    ({}, "name: missing"),
])
def test_bad_mapping_is_refused(attrs: dict, message: str) -> None:
    with pytest.raises(ModparamError) as info:
        build_spec(attrs)
    assert any(message in p for p in info.value.problems), info.value.problems
