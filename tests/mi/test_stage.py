"""MICore.stage / finish: a request is checked without running a command with side
effects, and what runs gives the same bytes as handle.  The FIFO listener relies on
both: it makes the ready replies before it opens the reply FIFO (mi_fifo.listener.answer)."""

from __future__ import annotations

import json

import pytest

from compat.transcripts import load_all
from mi_server.engine import QueueSpec
from mi_server.mi.commands import REGISTRY
from mi_server.mi.core import Staged
from mi_server.mi.jsonvalues import JObject, parse
from tests.mi.arena_core import arena_core

QUEUES = [QueueSpec("q"), QueueSpec("r", size=2)]
ITEMS = [("q", "a", "1"), ("q", "b", "2"), ("r", "x", "y")]


def state(arena):
    """Everything a command could change in the engine: sizes and every counter."""
    return arena.sizes(), arena.stats()  # QueueStats compare by value


@pytest.mark.parametrize("request_, reply", [
    (b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q"],"id":1}',
     b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q","size":2}},"id":1}'),
    (b'{"jsonrpc":"2.0","method":"mq_fetch","params":{},"id":2}',  # bad params: an error
     b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params",'
     b'"data":"Too few or too many parameters"},"id":2}'),
    (b'{"jsonrpc":"2.0","method":"mq_fetchx","params":["q"],"id":3}',
     b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":3}'),
    (b'{"jsonrpc":"1.0","method":"mq_fetch","params":["q"],"id":4}',
     b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":4}'),
    (b'{"jsonrpc":"2.0","method":"mq_get_sizes"}', None),  # a notification: no reply
])
def test_ready_replies_run_nothing_with_side_effects(request_, reply):
    with arena_core(QUEUES, ITEMS) as (core, arena):
        before = state(arena)
        got = core.stage(parse(request_))
        assert got == reply
        assert state(arena) == before
        assert got == core.handle(request_)


@pytest.mark.parametrize("request_, reply, sizes", [
    (b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q"],"id":"f"}',
     b'{"jsonrpc":"2.0","result":{"Item":{"key":"a","value":"1"}},"id":"f"}', {"q": 1, "r": 1}),
    (b'{"jsonrpc":"2.0","method":"mq_add","params":["r","k","v"]}', None, {"q": 2, "r": 2}),
    (b'[{"jsonrpc":"2.0","method":"mq_get_size","params":["r"],"id":1}]',  # a batch: whole
     b'[{"jsonrpc":"2.0","result":{"Queue":{"name":"r","size":1}},"id":1}]', {"q": 2, "r": 1}),
])
def test_side_effects_wait_for_finish(request_, reply, sizes):
    with arena_core(QUEUES, ITEMS) as (core, arena):
        before = state(arena)
        staged = core.stage(parse(request_))
        assert type(staged) is Staged
        assert state(arena) == before  # checked, not run
        assert core.finish(staged) == reply
        assert dict(arena.sizes()) == sizes


def test_read_only_commands_change_nothing():
    """Every command registered with side_effects=False, as the transcripts call it (valid
    and invalid params alike), leaves the engine as it was; and the registry marks at least
    the mqueue readers so (the FIFO's fast order depends on the flag)."""
    read_only = {name for name in REGISTRY.names() if not REGISTRY.get(name).side_effects}
    assert {"mq_get_size", "mq_get_sizes", "which", "uptime"} <= read_only
    assert not {"mq_fetch", "mq_add", "kill", "reset_statistics"} & read_only
    checked = set()
    for case in load_all():
        with arena_core([QueueSpec(**q) for q in case.queues], case.items) as (core, arena):
            for step in case.steps:
                try:
                    doc = parse(step.request)
                except ValueError:
                    continue
                method = dict(doc).get("method") if type(doc) is JObject else None
                before = state(arena)
                got = core.stage(doc)
                if method in read_only:
                    assert type(got) is not Staged, step.request
                    assert state(arena) == before, step.request
                    checked.add(method)
                elif type(got) is Staged:
                    got = core.finish(got)
                assert step.matches(got), (step.request, got)
    assert checked >= {"mq_get_size", "mq_get_sizes", "which"}


# ---- stage_checked: a command that holds its change pending (mi_fifo's compiled path) ----


def checked(core, request_: bytes):
    """stage_checked with what the compiled path passes: (method, params, id text)."""
    m = dict(parse(request_))
    return core.stage_checked(m["method"], m.get("params"), json_id(m))


def json_id(m: dict) -> str:
    return f'"{m["id"]}"' if type(m["id"]) is str else str(m["id"])


FETCH = b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q"],"id":"f"}'


@pytest.mark.parametrize("commit", [True, False])
def test_a_held_fetch_counts_only_once_settled(commit):
    with arena_core(QUEUES, ITEMS) as (core, arena), arena_core(QUEUES, ITEMS) as (ref, _):
        before = state(arena)
        held = checked(core, FETCH)
        assert type(held) is tuple
        reply, settle = held
        assert reply == ref.handle(FETCH)  # the bytes a plain run answers
        settle(commit)
        if commit:
            assert dict(arena.sizes()) == {"q": 1, "r": 1}
            assert arena.stats()["q"].fetched == 1
        else:
            assert state(arena) == before
        assert core.handle(FETCH) == (ref.handle(FETCH) if commit else reply)


@pytest.mark.parametrize("request_, reply", [
    (b'{"jsonrpc":"2.0","method":"mq_fetch","params":["nope"],"id":1}',
     b'{"jsonrpc":"2.0","error":{"code":404,"message":"No such queue"},"id":1}'),
    (b'{"jsonrpc":"2.0","method":"mq_fetch","params":["e"],"id":2}',
     b'{"jsonrpc":"2.0","error":{"code":404,"message":"Empty queue"},"id":2}'),
    (b'{"jsonrpc":"2.0","method":"mq_fetch","params":{"name":[]},"id":3}',
     b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params",'
     b'"data":"Bad type for parameter \'name\'"},"id":3}'),
])
def test_a_held_fetch_that_changes_nothing_answers_at_once(request_, reply):
    """Errors hold nothing: a plain reply, and the engine is not locked afterwards."""
    with arena_core([*QUEUES, QueueSpec("e")], ITEMS) as (core, arena):
        before = state(arena)
        assert checked(core, request_) == reply == core.handle(request_)
        assert state(arena) == before
        assert arena.fetch_pending("q") is not None  # nothing was left pending
        arena.settle(False)


BULK = (b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q","5"],"id":1}')
BULK_REPLY = (b'{"jsonrpc":"2.0","result":[{"key":"a","value":"1"},{"key":"b","value":"2"}],'
              b'"id":1}')


@pytest.mark.parametrize("commit", [True, False])
def test_a_fetch_with_a_limit_is_held_too(commit):
    with arena_core(QUEUES, ITEMS) as (core, arena):
        before = state(arena)
        reply, settle = checked(core, BULK)
        assert reply == BULK_REPLY
        settle(commit)
        if commit:
            assert dict(arena.sizes())["q"] == 0 and arena.stats()["q"].fetched == 2
        else:
            assert state(arena) == before  # nothing removed, nothing counted
            assert arena.fetch_many("q", 5) == [("a", "1"), ("b", "2")]  # in order


def test_a_bulk_over_the_hold_limit_is_staged_as_before():
    with arena_core(QUEUES, [("q", "k", "v" * 5000)]) as (core, arena):
        staged = checked(core, BULK)
        assert type(staged) is Staged
        assert json.loads(core.finish(staged))["result"] == [{"key": "k", "value": "v" * 5000}]


def test_only_stage_checked_holds():
    """The Python listener's stage (it may wait for the reader) and HTTP never hold."""
    with arena_core(QUEUES, ITEMS) as (core, arena):
        assert type(core.stage(parse(FETCH))) is Staged
        assert core.handle(FETCH) == (
            b'{"jsonrpc":"2.0","result":{"Item":{"key":"a","value":"1"}},"id":"f"}')
        assert arena.fetch_pending("q") is not None  # handle left nothing pending
        arena.settle(False)


def test_an_item_too_big_to_encode_under_the_lock_is_put_back_and_staged():
    from mi_server.mi.commands.mqueue import HOLD_MAX_CHARS

    big = "v" * HOLD_MAX_CHARS
    with arena_core([QueueSpec("q")], [("q", "k", big), ("q", "k2", "2")]) as (core, arena):
        before = state(arena)
        staged = checked(core, FETCH)
        assert type(staged) is Staged
        assert state(arena) == before
        assert arena.snapshot("q") == [("k", big), ("k2", "2")]
        assert core.finish(staged).startswith(b'{"jsonrpc":"2.0","result":{"Item":{"key":"k"')
        assert arena.size("q") == 1


def _raise(*args):
    raise RuntimeError("boom")


@pytest.mark.parametrize("module, name, value, reply", [
    # the size check raises inside the command, after the item was taken
    ("mi_server.mi.commands.mqueue", "HOLD_MAX_CHARS", None,
     b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"Server error",'
     b'"data":"Command handler returned null"},"id":"f"}'),
    # the reply cannot be made, in the core, after the command returned
    ("mi_server.mi.core", "encode_fast", _raise,
     b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"Server error"},"id":null}'),
])
def test_a_failure_after_the_item_is_taken_undoes_the_held_fetch(monkeypatch, module, name,
                                                                 value, reply):
    """The engine must never stay locked, nor the item gone, for a reply never made."""
    with arena_core(QUEUES, ITEMS) as (core, arena):
        before = state(arena)
        monkeypatch.setattr(f"{module}.{name}", value)
        assert checked(core, FETCH) == reply
        monkeypatch.undo()
        assert state(arena) == before
        assert arena.fetch_pending("q") == ("a", "1")  # nothing left pending or locked
        arena.settle(False)


def test_an_item_only_the_slow_encoder_writes_is_put_back_and_staged():
    """A lone surrogate: orjson refuses it, and the stdlib fallback is not run with the
    engine locked; the staged run answers exactly what handle does."""
    items = [("q", "k", "a\ud800b"), ("q", "k2", "2")]
    with arena_core([QueueSpec("q")], items) as (core, arena), \
            arena_core([QueueSpec("q")], items) as (ref, _):
        before = state(arena)
        staged = checked(core, FETCH)
        assert type(staged) is Staged
        assert state(arena) == before
        expected = ref.handle(FETCH)
        assert b'"a\\ud800b"' in expected  # written back as its escape
        assert core.finish(staged) == expected
        assert arena.size("q") == 1
