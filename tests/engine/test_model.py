"""Model-based test: random operations on the arena and on a plain-Python model of
the queue semantics (docs/configuration.md) must give identical results; invariants hold
after every step. The same machine runs against the Redis engine (RedisMachine)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mi_server.engine import Arena, ArenaFull, QueueSpec, QueueStats

from .conftest import REDIS_URL, delete_prefix, unique_name, unique_prefix

SPECS = [
    QueueSpec("plain"),
    QueueSpec("bounded", size=3),
    QueueSpec("oldest", size=4, addmode=1),
    QueueSpec("newest", addmode=2),
    QueueSpec("newest3", size=3, addmode=2),
]
NAMES = [s.name for s in SPECS]
KEYS = st.sampled_from(["", "a", "b", "A", "é", "e\u0301", "\ud800", "key-long-" * 4])
VALUES = st.one_of(st.text(max_size=8), st.sampled_from(["x" * 700, "y" * 3000]))


class ModelQueue:
    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.items: list[tuple[str, str]] = []
        self.counts = [0, 0, 0, 0]  # added, fetched, dropped_size, dropped_addmode

    def add(self, key: str, value: str) -> None:
        mode = self.spec.effective_addmode
        same = [i for i, (k, _v) in enumerate(self.items) if k == key]
        self.counts[0] += 1
        if same and mode == 1:
            self.counts[3] += 1
            return
        if same and mode == 2:
            del self.items[same[0]]
            self.counts[3] += 1
        self.items.append((key, value))
        if self.spec.size > 0 and len(self.items) > self.spec.size:
            del self.items[0]
            self.counts[2] += 1

    def fetch(self) -> tuple[str, str] | None:
        if not self.items:
            return None
        self.counts[1] += 1
        return self.items.pop(0)


class ArenaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # small enough that big values fill it now and then (ArenaFull must change nothing)
        self.arena = Arena.create(unique_name(), 64 << 10, SPECS)
        self.model = {s.name: ModelQueue(s) for s in SPECS}

    def teardown(self) -> None:
        self.arena.unlink()
        self.arena.close()

    @rule(q=st.sampled_from(NAMES), key=KEYS, value=VALUES)
    def add(self, q, key, value):
        try:
            self.arena.add(q, key, value)
        except ArenaFull:
            return  # the model stays as it was; the invariant compares everything
        self.model[q].add(key, value)

    @rule(q=st.sampled_from(NAMES))
    def fetch(self, q):
        assert self.arena.fetch(q) == self.model[q].fetch()

    @rule(q=st.sampled_from(NAMES))
    def mq_fetch(self, q):
        expected = self.model[q].fetch()
        assert self.arena.mq_fetch(q) == (1 if expected else -2)
        if expected:
            assert (self.arena.mqk(q), self.arena.mqv(q)) == expected

    @rule(q=st.sampled_from(NAMES), limit=st.integers(1, 5))
    def fetch_many(self, q, limit):
        expected = [item for item in (self.model[q].fetch() for _ in range(limit)) if item]
        assert self.arena.fetch_many(q, limit) == expected

    @rule(q=st.sampled_from(NAMES))
    def size(self, q):
        n = len(self.model[q].items)
        assert self.arena.size(q) == n
        assert self.arena.mq_size(q) == (n if n else -1)

    @rule(q=st.sampled_from([*NAMES, None]))
    def reset_stats(self, q):
        self.arena.reset_stats(q)
        for name in [q] if q else NAMES:
            self.model[name].counts = [0, 0, 0, 0]

    @invariant()
    def same_state_and_consistent(self):
        self.arena.check_invariants()
        assert self.arena.sizes() == [(n, len(self.model[n].items)) for n in reversed(NAMES)]
        assert self.arena.stats() == {
            n: QueueStats(len(m.items), *m.counts) for n, m in self.model.items()
        }
        for name in NAMES:
            assert self.arena.snapshot(name) == self.model[name].items


ArenaMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestArenaAgainstModel = ArenaMachine.TestCase


class PythonPopMachine(ArenaMachine):
    """The same with the Python pop: ArenaMachine runs the compiled one where it is built
    (mi_server/engine/shm/_speedups.c), so each is checked against the model."""

    def __init__(self) -> None:
        super().__init__()
        vars(self.arena).pop("_pop_plain", None)  # the class's Python pop runs


PythonPopMachine.TestCase.settings = ArenaMachine.TestCase.settings
TestArenaWithPythonPopAgainstModel = PythonPopMachine.TestCase


class RedisMachine(ArenaMachine):
    """The same rules and invariants against the Redis engine, on a key prefix of its own
    (it never raises ArenaFull: Redis has no maxmemory here)."""

    def __init__(self) -> None:
        from mi_server.engine.redis import RedisEngine

        RuleBasedStateMachine.__init__(self)
        self.prefix = unique_prefix()
        self.arena = RedisEngine.open(REDIS_URL, self.prefix, SPECS)
        self.model = {s.name: ModelQueue(s) for s in SPECS}

    def teardown(self) -> None:
        self.arena.close()
        delete_prefix(REDIS_URL, self.prefix)


RedisMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40,
                                          deadline=None)
TestRedisEngineAgainstModel = RedisMachine.TestCase
