"""The MI's compiled commands (mi_server/mi/_compiled.c) against the MI core they stand in
for.

Two arenas holding the same items, each under its own MI core: one answers every request
the way a fast path does (the compiled commands first, the core for what they leave),
the other through the core alone.  The replies must be byte for byte the same and the
queues must end alike (items, order and statistics), on generated requests and items
(keys and values the compiled fetch writes itself, and those it must leave to the core).
Then the engine states the compiled code must leave alone: a busy lock, an undo log a dead
holder left, a closed arena.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_server.engine import Arena, QueueSpec
from mi_server.mi import build_core, compiled
from mi_server.mi.context import MIContext

pytestmark = pytest.mark.skipif(not compiled.built(),
                                reason="mi_server.mi._compiled was not built")

SPECS = [QueueSpec("q1"), QueueSpec("q2", size=5), QueueSpec("keyed", addmode=2),
         QueueSpec("qe"), QueueSpec("é")]
GET_SIZE = b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":1}'
FETCH = b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q1"],"id":1}'


def make(tag: str) -> tuple[Arena, object]:
    arena = Arena.create(f"mqmi-compiled-{os.getpid()}-{tag}-{time.monotonic_ns()}",
                         1 << 20, SPECS)
    return arena, build_core(MIContext(engine=arena, started=0.0))


@pytest.fixture
def twins():
    made = [make("c"), make("p")]
    yield made
    for arena, _core in made:
        arena.close()
        arena.unlink()


def state(arena: Arena) -> tuple:
    return ([arena.snapshot(spec.name) for spec in SPECS], arena.sizes(),
            sorted(arena.stats().items()))


def test_the_extension_is_built():
    assert compiled.built(), ("mi_server.mi._compiled is missing: reinstall with a C "
                              "compiler (pip install -e '.[test]') and look for its error")


def test_the_common_requests_are_answered_compiled(twins):
    (arena, core), _ = twins
    arena.add("q1", "k1", "v1")
    commands = compiled.load(core)
    assert compiled.answer(commands, GET_SIZE) == \
        b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":1}},"id":1}'
    assert compiled.answer(commands, b'{"jsonrpc":"2.0","method":"mq_get_sizes","id":"s"}') == (
        b'{"jsonrpc":"2.0","result":{"Queue":[{"name":"\xc3\xa9","size":0},'
        b'{"name":"qe","size":0},{"name":"keyed","size":0},{"name":"q2","size":0},'
        b'{"name":"q1","size":1}]},"id":"s"}')
    assert compiled.answer(commands, FETCH) == \
        b'{"jsonrpc":"2.0","result":{"Item":{"key":"k1","value":"v1"}},"id":1}'
    assert arena.size("q1") == 0 and arena.stats()["q1"].fetched == 1
    assert compiled.answer(commands, FETCH) == \
        b'{"jsonrpc":"2.0","error":{"code":404,"message":"Empty queue"},"id":1}'
    arena.check_invariants()


def test_what_they_leave_to_the_core_changes_nothing(twins):
    (arena, core), _ = twins
    arena.add("q1", "k\n", "v")  # a key the compiled fetch does not write itself
    arena.add("keyed", "k", "v")
    commands = compiled.load(core)
    before = state(arena)
    for body in (b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q1"],"id":1}',
                 b'{"jsonrpc":"2.0","method":"mq_fetch","params":["keyed"],"id":1}',
                 b'{"jsonrpc":"2.0","method":"mq_fetch","params":{"name":"q1","limit":"1"},'
                 b'"id":1}',
                 b'{"jsonrpc":"2.0","method":"mq_get_size","params":["nosuch"],"id":1}',
                 b'{"jsonrpc":"2.0","method":"mq_get_size","params":{"queue":"q1"},"id":1}',
                 b'{"jsonrpc":"2.0","method":"mq_get_sizes","params":["q1"],"id":1}',
                 b'{"jsonrpc":"2.0","method":"which","id":1}'):
        assert compiled.answer(commands, body) is None, body
    assert state(arena) == before


def test_they_are_off_where_they_would_not_be_the_same(twins, monkeypatch):
    (arena, core), _ = twins
    assert compiled.load(build_core(MIContext(engine=object(), started=0.0))) is None
    monkeypatch.setenv(compiled.ENV, "0")
    assert compiled.load(core) is None
    monkeypatch.setenv(compiled.ENV, "1")
    assert compiled.load(core) is not None
    other = build_core(MIContext(engine=arena, started=0.0))
    other.registry = type(core.registry)([])  # a registry without mqueue.py's commands
    assert compiled.load(other) is None


def test_a_busy_engine_is_left_to_the_core(twins):
    (arena, core), _ = twins
    arena.add("q1", "k1", "v1")
    commands = compiled.load(core)
    assert arena.fetch_pending("q1") == ("k1", "v1")  # the lock held, the removal logged
    try:
        assert compiled.answer(commands, FETCH) is None
        assert compiled.answer(commands, GET_SIZE) is None  # the undo log is busy
    finally:
        arena.settle(False)
    assert compiled.answer(commands, GET_SIZE) == \
        b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":1}},"id":1}'


def test_a_dead_holders_operation_is_rolled_back_by_the_core_not_lost(twins):
    (arena, core), _ = twins
    arena.add("q1", "k1", "v1")
    commands = compiled.load(core)
    pid = os.fork()
    if pid == 0:  # take the item, hold the lock, die before committing
        arena.fetch_pending("q1")
        os._exit(0)
    os.waitpid(pid, 0)
    # the mutex is its dead owner's and the log is busy: the compiled fetch lets go of it
    # and the core takes it over and rolls back, so the item is fetched, not lost
    assert compiled.answer(commands, FETCH) is None
    assert core.handle(FETCH) == \
        b'{"jsonrpc":"2.0","result":{"Item":{"key":"k1","value":"v1"}},"id":1}'
    arena.check_invariants()
    assert compiled.answer(commands, FETCH) == \
        b'{"jsonrpc":"2.0","error":{"code":404,"message":"Empty queue"},"id":1}'


def test_a_closed_arena_is_left_to_the_core(twins):
    (arena, core), _ = twins
    commands = compiled.load(core)
    arena.close()
    assert compiled.answer(commands, GET_SIZE) is None
    assert compiled.answer(commands, FETCH) is None
    assert b'"error"' in core.handle(FETCH)


# -- generated items and requests ------------------------------------------------------
_plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=6)
_texts = st.one_of(_plain, _plain, st.text(max_size=4))  # controls, quotes, emoji...
_queues = st.sampled_from(["q1", "q1", "q2", "keyed", "qe", "é", "nosuch", ""])


@st.composite
def bodies(draw) -> bytes:
    method = draw(st.sampled_from(["mq_get_size", "mq_get_sizes", "mq_fetch", "mq_fetch",
                                   "mq_fetch", "which"]))
    doc: dict = {"jsonrpc": "2.0", "method": method}
    shape = draw(st.sampled_from(["list", "named", "none", "empty", "limit", "two",
                                  "other name"]))
    name = draw(_queues)
    if shape == "list":
        doc["params"] = [name]
    elif shape == "named":
        doc["params"] = {"name": name}
    elif shape == "empty":
        doc["params"] = draw(st.sampled_from([[], {}]))
    elif shape == "limit":
        doc["params"] = {"name": name, "limit": draw(st.sampled_from(["1", "3", "0"]))}
    elif shape == "two":
        doc["params"] = [name, "x"]
    elif shape == "other name":
        doc["params"] = {"queue": name}
    doc["id"] = draw(st.one_of(st.integers(-999, 999_999_999), _plain))
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.tuples(st.sampled_from(["q1", "q1", "q2", "keyed"]), _texts,
                                _texts), max_size=12),
       requests=st.lists(bodies(), min_size=1, max_size=12))
def test_the_compiled_commands_answer_as_the_core(twins, items, requests):
    (fast, fast_core), (slow, slow_core) = twins
    for arena in (fast, slow):  # the same starting point on both
        for spec in SPECS:
            arena.fetch_many(spec.name, 1000)
        arena.reset_stats()
        for q, k, v in items:
            arena.add(q, k, v)
    commands = compiled.load(fast_core)
    for body in requests:
        reply = compiled.answer(commands, body)
        if reply is None:  # what a fast path does next
            reply = fast_core.handle(body)
        assert reply == slow_core.handle(body), body
    assert state(fast) == state(slow)
    fast.check_invariants()
