"""What only the Redis engine has: instances sharing queues, stored definitions, the
conditional removal's lease, and its failures (Redis down, out of memory, restarted
without its data or functions).  The semantics themselves are test_semantics.py's and
test_model.py's, run against both engines."""

from __future__ import annotations

import os
import time

import pytest
import redis

from mi_server.engine import (
    ArenaFull,
    DefinitionMismatch,
    EngineUnavailable,
    QueueSpec,
    QueueStats,
    UnknownQueue,
)
from mi_server.engine.redis import RedisEngine
from mi_server.engine.redis import engine as redis_engine
from tests.redisproc import redis_server  # noqa: F401  (a fixture)
from tests.serverproc import free_port

from .conftest import REDIS_URL, unique_prefix

SPECS = [QueueSpec("plain"), QueueSpec("newest", size=3, addmode=2), QueueSpec("empty")]


def fill(engine: RedisEngine) -> None:
    for i in range(3):
        engine.add("plain", f"k{i}", f"v{i}")
        engine.add("newest", f"n{i}", str(i))


def state(engine: RedisEngine) -> tuple:
    return {s.name: engine.snapshot(s.name) for s in SPECS}, engine.stats()


@pytest.fixture
def pair(make_redis):
    """Two instances on one prefix, as two servers sharing a Redis."""
    prefix = unique_prefix()
    a = make_redis(SPECS, prefix=prefix)
    b = make_redis(SPECS, prefix=prefix)
    return a, b


def test_two_instances_share_the_queues(pair):
    a, b = pair
    a.add("plain", "k", "v")
    b.add("newest", "x", "1")
    a.add("newest", "x", "2")  # addmode 2 across instances: one item, the newest
    assert b.fetch("plain") == ("k", "v")
    assert b.snapshot("newest") == [("x", "2")]
    assert a.stats()["newest"] == QueueStats(1, 2, 0, 0, 1)
    a.check_invariants()


def test_a_second_instance_with_another_definition_is_refused(make_redis):
    prefix = unique_prefix()
    make_redis([QueueSpec("q", size=10, addmode=1)], prefix=prefix)
    with pytest.raises(DefinitionMismatch, match=r"queue 'q' is defined in Redis .* with "
                       r"size=10 addmode=1, but this configuration says size=20 addmode=2"):
        make_redis([QueueSpec("q", size=20, addmode=2)], prefix=prefix)
    # values that act alike are alike: size <= 0 is unlimited, addmode 7 acts as 0
    make_redis([QueueSpec("u", size=-3, addmode=7)], prefix=prefix)
    make_redis([QueueSpec("u", size=0, addmode=0)], prefix=prefix)


def test_prefixes_keep_deployments_apart(make_redis):
    a = make_redis([QueueSpec("q")])
    b = make_redis([QueueSpec("q", size=5)])  # another prefix: another queue, no conflict
    a.add("q", "k", "v")
    assert b.size("q") == 0 and a.size("q") == 1


def test_unknown_queue_on_the_pending_fetch(make_redis):
    with pytest.raises(UnknownQueue):
        make_redis(SPECS).fetch_pending("nope")


# ---- the conditional removal (fetch_pending / settle) --------------------------------

@pytest.mark.parametrize("q", ["plain", "newest"])
def test_a_committed_pending_fetch_is_a_fetch(make_redis, q):
    a, b = make_redis(SPECS), make_redis(SPECS)
    fill(a)
    fill(b)
    assert a.fetch_pending(q) == b.fetch(q)
    a.settle(True)
    assert state(a) == state(b)
    a.check_invariants()


@pytest.mark.parametrize("q", ["plain", "newest"])
def test_an_undone_pending_fetch_leaves_the_queues_as_they_were(make_redis, q):
    a = make_redis(SPECS)
    fill(a)
    before = state(a)
    first = a.fetch_pending(q)
    a.settle(False)
    assert state(a) == before
    a.check_invariants()
    assert a.fetch(q) == first


def test_nobody_else_gets_a_held_item(pair):
    """Another instance does not wait (no lock): it sees the queue without the held item
    and takes the next one."""
    a, b = pair
    fill(a)
    assert a.fetch_pending("plain") == ("k0", "v0")
    assert b.size("plain") == 2
    assert b.fetch("plain") == ("k1", "v1")
    a.settle(False)  # back at the head: the oldest again
    assert b.snapshot("plain") == [("k0", "v0"), ("k2", "v2")]
    a.check_invariants()


def test_an_empty_queue_holds_nothing(make_redis):
    a = make_redis(SPECS)
    assert a.fetch_pending("empty") is None
    a.settle(True)  # nothing to do
    assert a.stats()["empty"] == QueueStats(0, 0, 0, 0, 0)


def test_a_holder_that_dies_loses_nothing(pair, monkeypatch):
    """A process that takes an item pending and dies: once the lease ends, the next fetch
    there gives it back first."""
    monkeypatch.setattr(redis_engine, "HOLD_LEASE_MS", 300)
    a, b = pair
    fill(a)
    pid = os.fork()
    if pid == 0:
        try:
            child = RedisEngine.open(REDIS_URL, a.prefix, SPECS)
            child.fetch_pending("plain")
        finally:
            os._exit(0)  # no settle, no close
    os.waitpid(pid, 0)
    assert b.size("plain") == 2  # held by the dead child
    time.sleep(0.4)
    assert b.fetch("plain") == ("k0", "v0")  # the lease ended: given back at the head
    assert b.stats()["plain"].fetched == 1
    b.check_invariants()


def test_a_late_settle_after_the_lease_says_so(make_redis, monkeypatch):
    monkeypatch.setattr(redis_engine, "HOLD_LEASE_MS", 100)
    a = make_redis(SPECS)
    fill(a)
    a.fetch_pending("plain")
    time.sleep(0.2)
    assert a.size("plain") == 2  # nothing has reclaimed it yet...
    b = make_redis(SPECS, prefix=a.prefix)
    assert b.fetch_many("plain", 1) == [("k0", "v0")]  # ...a fetch does, then takes it
    with pytest.raises(RuntimeError, match="undone before it was settled"):
        a.settle(True)
    a.check_invariants()


def test_a_given_back_item_whose_key_came_back_is_dropped_by_addmode(make_redis):
    a = make_redis(SPECS)
    a.add("newest", "x", "old")
    assert a.fetch_pending("newest") == ("x", "old")
    other = make_redis(SPECS, prefix=a.prefix)
    other.add("newest", "x", "new")  # the key is free while its item is held
    a.settle(False)
    assert a.snapshot("newest") == [("x", "new")]
    assert a.stats()["newest"] == QueueStats(1, 2, 0, 0, 1)
    a.check_invariants()


def test_a_second_fetch_pending_gives_the_first_back(make_redis):
    a = make_redis(SPECS)
    fill(a)
    a.fetch_pending("plain")
    assert a.fetch_pending("plain") == ("k0", "v0")  # the first was undone, then taken again
    a.settle(True)
    assert a.snapshot("plain") == [("k1", "v1"), ("k2", "v2")]
    a.check_invariants()


def test_closing_gives_a_held_item_back(make_redis):
    a = make_redis(SPECS)
    fill(a)
    b = make_redis(SPECS, prefix=a.prefix)
    b.fetch_pending("plain")
    b.close()
    assert a.snapshot("plain")[0] == ("k0", "v0")
    a.check_invariants()


# ---- the bulk form (fetch_many_pending / settle) ------------------------------------

@pytest.mark.parametrize("q", ["plain", "newest"])
@pytest.mark.parametrize("limit", [1, 2, 10])
def test_a_committed_bulk_is_a_fetch_many(make_redis, q, limit):
    a, b = make_redis(SPECS), make_redis(SPECS)
    fill(a)
    fill(b)
    assert a.fetch_many_pending(q, limit) == b.fetch_many(q, limit)
    a.settle(True)
    assert state(a) == state(b)
    a.check_invariants()


@pytest.mark.parametrize("q", ["plain", "newest"])
def test_an_undone_bulk_leaves_the_queue_as_it_was_in_order(make_redis, q):
    a = make_redis(SPECS)
    fill(a)
    before = state(a)
    items = a.fetch_many_pending(q, 2)
    assert a.size(q) == 1  # held: out of the queue until settled
    a.settle(False)
    assert state(a) == before
    a.check_invariants()
    assert a.fetch_many(q, 2) == items  # the same items, still first, in order


def test_an_empty_bulk_holds_nothing(make_redis):
    a = make_redis(SPECS)
    assert a.fetch_many_pending("empty", 5) == []
    a.settle(False)  # nothing held: harmless
    assert a.stats()["empty"] == QueueStats(0, 0, 0, 0, 0)


def test_a_holder_of_a_bulk_that_dies_loses_nothing(pair, monkeypatch):
    monkeypatch.setattr(redis_engine, "HOLD_LEASE_MS", 300)
    a, b = pair
    fill(a)
    pid = os.fork()
    if pid == 0:
        try:
            child = RedisEngine.open(REDIS_URL, a.prefix, SPECS)
            child.fetch_many_pending("plain", 2)
        finally:
            os._exit(0)  # no settle, no close
    os.waitpid(pid, 0)
    assert b.size("plain") == 1
    time.sleep(0.4)
    assert b.fetch_many("plain", 5) == [("k0", "v0"), ("k1", "v1"), ("k2", "v2")]
    b.check_invariants()


def test_a_given_back_bulk_keeps_its_order_and_drops_a_key_that_came_back(make_redis):
    a = make_redis(SPECS)
    fill(a)  # newest: n0, n1, n2
    assert a.fetch_many_pending("newest", 2) == [("n0", "0"), ("n1", "1")]
    other = make_redis(SPECS, prefix=a.prefix)
    other.add("newest", "n1", "again")  # the key is free while its item is held
    a.settle(False)
    assert a.snapshot("newest") == [("n0", "0"), ("n2", "2"), ("n1", "again")]
    assert a.stats()["newest"].dropped_addmode == 1
    a.check_invariants()


# ---- failures -------------------------------------------------------------------------

def test_an_unreachable_redis_fails_quickly_and_clearly():
    started = time.monotonic()
    with pytest.raises(EngineUnavailable, match="Redis unavailable"):
        RedisEngine.open(f"redis://127.0.0.1:{free_port()}/0", unique_prefix(), SPECS,
                         timeout=0.5)
    assert time.monotonic() - started < 5  # a bound for "does not hang", not a figure


def test_redis_stopped_then_back_without_its_data(redis_server):  # noqa: F811
    engine = RedisEngine.open(redis_server.url, "t", SPECS, timeout=0.5)
    try:
        engine.add("plain", "k", "v")
        redis_server.stop()
        for op in (lambda: engine.add("plain", "k", "v"), lambda: engine.fetch("plain"),
                   lambda: engine.size("plain"), engine.sizes, engine.stats):
            started = time.monotonic()
            with pytest.raises(EngineUnavailable):
                op()
            assert time.monotonic() - started < 5
        redis_server.start()  # empty: no queues, no functions
        engine.add("plain", "k2", "v2")  # defined and loaded again, then done
        assert engine.fetch("plain") == ("k2", "v2")
        assert engine.sizes() == [("empty", 0), ("newest", 0), ("plain", 0)]
        engine.check_invariants()
    finally:
        engine.close()


def test_lost_functions_are_loaded_again(redis_server):  # noqa: F811
    engine = RedisEngine.open(redis_server.url, "t", SPECS)
    try:
        engine.add("plain", "k", "v")
        redis.Redis.from_url(redis_server.url).function_flush()
        assert engine.fetch("plain") == ("k", "v")
    finally:
        engine.close()


def test_a_full_redis_is_arena_full_and_changes_nothing(redis_server):  # noqa: F811
    client = redis.Redis.from_url(redis_server.url)
    engine = RedisEngine.open(redis_server.url, "t", SPECS)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", client.info("memory")["used_memory"] + (2 << 20))
        n = 0
        with pytest.raises(ArenaFull, match="out of memory"):
            while n < 100000:
                engine.add("plain", f"k{n}", "v" * 1000)
                n += 1
        assert n > 100
        assert engine.mq_add("plain", "k", "v" * 1000) is False
        assert engine.size("plain") == n
        engine.check_invariants()
        assert engine.fetch("plain") == ("k0", "v" * 1000)  # fetching still works
    finally:
        engine.close()
        client.close()


def _client_id(engine: RedisEngine) -> int:
    return int(engine._exec("CLIENT", "ID"))


def test_a_killed_connection_is_replaced_by_one_retry(make_redis):
    """The engine's own connection (direct.py) cut by Redis between two operations: the
    next operation fails once on it, and runs on a fresh connection, once."""
    engine = make_redis(SPECS)
    engine.add("plain", "k", "v")
    first = _client_id(engine)
    redis.Redis.from_url(REDIS_URL).client_kill_filter(_id=first)
    engine.add("plain", "k2", "v2")
    assert _client_id(engine) != first
    assert engine.snapshot("plain") == [("k", "v"), ("k2", "v2")]  # added once each
    engine.check_invariants()


def test_every_operation_of_a_process_uses_one_connection(make_redis):
    engine = make_redis(SPECS)
    fill(engine)
    own = _client_id(engine)
    engine.fetch("plain")
    engine.sizes()
    engine.stats()
    engine.size("plain")
    assert _client_id(engine) == own
    clients = redis.Redis.from_url(REDIS_URL).client_list()
    assert [c for c in clients if int(c["id"]) == own]
    assert len(engine._client.connection_pool._in_use_connections) == 1


def test_a_forked_child_keeps_the_parents_engine_on_a_connection_of_its_own(make_redis):
    engine = make_redis(SPECS)
    fill(engine)
    parent = _client_id(engine)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            item = engine.fetch("plain")
            os.write(w, f"{_client_id(engine)} {item[0]}".encode())
        finally:
            os._exit(0)  # the parent's connection is not touched on the way out
    os.close(w)
    with os.fdopen(r) as f:
        child, key = f.read().split()
    os.waitpid(pid, 0)
    assert key == "k0" and int(child) != parent
    assert _client_id(engine) == parent  # the parent's connection still works
    assert engine.fetch("plain") == ("k1", "v1")


class ReplyCutter:
    """A TCP proxy in front of the test Redis that, when armed, resets the client's
    connection as the next reply arrives from Redis: the command has run, its reply is
    lost (a proxy or firewall reset, a CLIENT KILL at the wrong instant)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.armed = threading.Event()
        upstream = redis.Redis.from_url(REDIS_URL).connection_pool.connection_kwargs
        self.upstream = (upstream.get("host", "127.0.0.1"), upstream.get("port", 6379))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True),
                             daemon=True).start()

    def _pump(self, src, dst, replies: bool) -> None:
        import socket
        import struct

        try:
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
                    # now, though the other thread is still reading from it
                    dst.shutdown(socket.SHUT_RDWR)
                    return  # the reply is not passed on
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutter():
    proxy = ReplyCutter()
    yield proxy
    proxy.close()


def test_a_command_whose_reply_is_lost_is_not_sent_again(cutter):
    """It ran: sent again, a fetch would take the next item too (and deliver one of the
    two), an add would queue its item twice.  The failure is the in-doubt answer, and
    the next operation runs on a new connection."""
    prefix = unique_prefix()
    engine = RedisEngine.open(cutter.url, prefix, SPECS)
    try:
        fill(engine)
        cutter.armed.set()
        with pytest.raises(EngineUnavailable):
            engine.fetch("plain")
        assert engine.snapshot("plain") == [("k1", "v1"), ("k2", "v2")]  # k0 taken, once
        cutter.armed.set()
        with pytest.raises(EngineUnavailable):
            engine.add("plain", "kX", "vX")
        assert engine.snapshot("plain") == [("k1", "v1"), ("k2", "v2"), ("kX", "vX")]
        assert engine.fetch("plain") == ("k1", "v1")
        engine.check_invariants()
    finally:
        engine.close()
        from .conftest import delete_prefix

        delete_prefix(REDIS_URL, prefix)
