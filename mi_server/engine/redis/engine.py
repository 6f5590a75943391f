"""The Redis engine: the queues of every mi-server instance that names the same Redis and
key prefix, one FCALL of mqueue.lua per operation (docs/redis.md).

The client side only names keys, encodes and decodes: every change runs atomically in
Redis.  Failures map onto the engine's errors: Redis unreachable or too slow ->
EngineUnavailable (within about twice the configured time-out), Redis out of memory
(maxmemory) -> ArenaFull, a Redis that lost its data -> the queue is defined again and
the operation retried once, a Redis that lost the function library -> it is loaded again
and the operation retried once.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.connection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.retry import Retry

from ..contract import Claim
from ..errors import ArenaCorrupt, ArenaFull, DefinitionMismatch, EngineUnavailable, UnknownQueue
from ..scriptlevel import ScriptLevel
from ..spec import QueueSpec
from ..stats import QueueStats
from .direct import DirectLink

_log = logging.getLogger("mqueue.engine")

LIBRARY = (Path(__file__).with_name("mqueue.lua")).read_text(encoding="utf-8")
# "#!lua name=mqmi<layout>": the functions are mqmi<layout>_<op>
LAYOUT = int(re.match(r"#!lua name=mqmi(\d+)\n", LIBRARY).group(1))  # type: ignore[union-attr]
FN = {op: f"mqmi{LAYOUT}_{op}" for op in
      ("define", "add", "fetch", "hold", "settle", "settle_many", "snapshot",
       "reset", "claim", "ack", "renew")}
NKEYS = 4  # the keys of one queue, in mqueue.lua's order
_SUFFIXES = ("m", "i", "x", "h")
# A held (pending) fetch not settled within this time is given back to its queue by the
# next fetch there: its holder died or stalled (settle then reports the hold as undone).
HOLD_LEASE_MS = 5000
DEFAULT_TIMEOUT = 1.0

_ENC = "utf-8"
_ERR = "surrogatepass"  # any JSON string, lone surrogates included, round-trips
_COUNTERS = ("a", "f", "ds", "dm")
_COUNTER_NAMES = ("added", "fetched", "dropped_size", "dropped_addmode")
_STATS_FIELDS = ("n", "f", "ds", "dm", "ba", "bf", "bds", "bdm")  # added: n + f + ds + dm
_PAD = (b"z", b"\xff")  # mqueue.lua's pad fields (items and meta, index)


def queue_keys(prefix: str, queue: str) -> list[bytes]:
    """The four keys of one queue: `<prefix>:{<queue>}:<part>`.  The braces are the
    cluster hash tag, so a queue's keys share one slot (and one node)."""
    base = f"{prefix}:{{{queue}}}:".encode(_ENC, _ERR)
    return [base + s.encode() for s in _SUFFIXES]


def definition(spec: QueueSpec) -> tuple[int, int]:
    """(size limit, addmode) as they act: what instances sharing a queue must agree on."""
    return max(spec.size, 0), spec.effective_addmode


def redacted(url: str) -> str:
    """The URL for log lines, its password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class _AbortOnClose(redis.connection.Connection):
    """A TCP connection whose close discards what the kernel has not delivered yet
    (SO_LINGER 0).  redis-py closes a connection after a time-out; without this, a request
    still waiting in the send queue of a cut link is delivered, and run, when the link
    comes back, long after its client was told it failed (seen in
    tests/integration/test_redis_netns.py)."""

    def _connect(self) -> socket.socket:
        sock = super()._connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return sock


def make_client(url: str | Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> Any:
    """A redis-py client (hiredis parses replies when installed) that gives up within
    `timeout` seconds per attempt.  A list of URLs names Redis Cluster nodes.

    No command is sent twice (direct.py says why): on a single Redis the engine sends
    its commands itself (direct.py), and the client's retry, one more attempt after a
    connection error, applies only to opening a connection; a cluster client retries
    nothing, as its retry would send a command again after any connection error."""
    common = dict(socket_timeout=timeout, socket_connect_timeout=timeout)
    if isinstance(url, str):
        if url.startswith("redis://"):  # TCP without TLS (rediss:// and unix:// as they are)
            common["connection_class"] = _AbortOnClose
        return redis.Redis.from_url(
            url, health_check_interval=0,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)), **common)
    from redis.cluster import ClusterNode, RedisCluster

    nodes = []
    for u in url:
        parts = urlsplit(u if "//" in u else f"redis://{u}")
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
    first = urlsplit(url[0] if "//" in url[0] else f"redis://{url[0]}")
    return RedisCluster(startup_nodes=nodes, password=first.password,
                        username=first.username, retry=Retry(NoBackoff(), 0), **common)


def _decode(item: bytes) -> tuple[str, str]:
    """(key, value) from mqueue.lua's "<key length>:<key><value>"."""
    c = item.index(b":")
    end = c + 1 + int(item[:c])
    return item[c + 1:end].decode(_ENC, _ERR), item[end:].decode(_ENC, _ERR)


_instances: weakref.WeakSet[RedisEngine] = weakref.WeakSet()


def _forget_in_child() -> None:
    for engine in list(_instances):
        engine._last = {}  # "the last item fetched by this process"
        engine._pending = None  # the parent's hold is the parent's to settle
        if engine._direct is not None:
            engine._direct.forget()  # the parent's connection


os.register_at_fork(after_in_child=_forget_in_child)


class RedisEngine(ScriptLevel):
    """The queues `queues` under `prefix` in the Redis that `client` talks to; see
    docs/redis.md.  Use RedisEngine.open.  One object per process (a forked child may
    keep its parent's: redis-py opens new connections in the child)."""

    def __init__(self, client: Any, prefix: str, queues: Sequence[QueueSpec],
                 where: str) -> None:
        names = [q.name for q in queues]
        if len(set(names)) != len(names):
            raise ValueError("queue defined twice")
        self._client = client
        # a single Redis: the engine's own connection (direct.py); a cluster: redis-py's
        # cluster client, which routes each command to its slot's node
        self._direct = DirectLink(client) if isinstance(client, redis.Redis) else None
        self._exec = client.execute_command if self._direct is None else self._direct.execute
        self.prefix = prefix
        self.name = f"{where} prefix {prefix!r}"
        self._specs = list(queues)
        self._names = names
        self._keys = {q.name: queue_keys(prefix, q.name) for q in queues}
        self._meta = {q: keys[0] for q, keys in self._keys.items()}
        self._defs = {q.name: definition(q) for q in queues}
        self._last: dict[str, tuple[str, str]] = {}
        # (queue, seq) of a held fetch, (queue, [seq...]) of a held bulk fetch
        self._pending: tuple[str, bytes | list[bytes]] | None = None
        _instances.add(self)

    @classmethod
    def open(cls, url: str | Sequence[str], prefix: str, queues: Sequence[QueueSpec],
             timeout: float = DEFAULT_TIMEOUT) -> RedisEngine:
        """Connect, load the function library, define the queues (or check them against
        their stored definitions: DefinitionMismatch).  EngineUnavailable when Redis
        cannot be reached."""
        where = redacted(url) if isinstance(url, str) else ",".join(map(redacted, url))
        engine = cls(make_client(url, timeout), prefix, queues, where)
        try:
            engine._load_library()
            for q in engine._names:
                engine._define(q)
        except BaseException:
            engine.close()
            raise
        return engine

    def close(self) -> None:
        """Give back a fetch still held, and close this process's connections (the
        queues stay in Redis)."""
        if self._pending is not None:
            try:
                self.settle(False)
            except (EngineUnavailable, RuntimeError):
                pass  # given back anyway when its lease ends
        try:
            if self._direct is not None:
                self._direct.close()
            self._client.close()
        except RedisError:
            pass

    def specs(self) -> list[QueueSpec]:
        return list(self._specs)

    # ---- the calls --------------------------------------------------------------------

    def _call(self, fn: str, q: str, *args: Any) -> Any:
        try:
            keys = self._keys[q]
        except KeyError:
            raise UnknownQueue(q) from None
        try:
            return self._exec("FCALL", fn, NKEYS, *keys, *args)
        except ResponseError as exc:
            return self._recovered(exc, q, ("FCALL", fn, NKEYS, *keys, *args))
        except RedisError as exc:  # connection, time-out, cluster down...
            raise _unavailable(exc) from None

    def _recovered(self, exc: ResponseError, q: str, command: tuple) -> Any:
        """Run `command` again once what its failure says is repaired: a Redis restarted
        without its data has lost both the functions and the queue (two repairs)."""
        for _ in range(2):
            self._recover(exc, q)
            try:
                return self._exec(*command)
            except ResponseError as again:
                exc = again
            except RedisError as again:
                raise _unavailable(again) from None
        raise self._failure(exc)

    def _retry(self, *command: Any) -> Any:
        try:
            return self._exec(*command)
        except ResponseError as exc:
            raise self._failure(exc) from None
        except RedisError as exc:
            raise _unavailable(exc) from None

    def _recover(self, exc: ResponseError, q: str) -> None:
        """Make the failed call retryable, or raise what it means."""
        text = str(exc)
        if "UNDEFINED" in text:  # Redis lost its data (restarted without persistence)
            _log.warning("queue %r is not defined in Redis (data lost?): defining it again", q)
            self._define(q)
        elif "Function not found" in text:  # Redis lost its functions
            _log.warning("the mqueue functions are not loaded in Redis: loading them again")
            self._load_library()
        else:
            raise self._failure(exc) from None

    @staticmethod
    def _failure(exc: ResponseError) -> Exception:
        text = str(exc)
        if isinstance(exc, OutOfMemoryError) or text.startswith("OOM"):
            # refused before the function ran (it is not flagged allow-oom): no change
            return ArenaFull(f"Redis is out of memory (maxmemory): {text}")
        _log.error("Redis refused an mqueue operation: %s", text)
        return EngineUnavailable(f"Redis refused the operation: {text}")

    def _load_library(self) -> None:
        try:
            if self._direct is None:  # the cluster client loads it on every primary
                self._client.function_load(LIBRARY, replace=True)
            else:
                self._exec("FUNCTION", "LOAD", "REPLACE", LIBRARY)
        except ResponseError as exc:
            raise self._failure(exc) from None
        except RedisError as exc:
            raise _unavailable(exc) from None

    def _define(self, q: str) -> None:
        limit, mode = self._defs[q]
        stored = self._retry("FCALL", FN["define"], NKEYS, *self._keys[q], limit, mode)
        got = (int(stored[0]), int(stored[1]))
        if int(stored[2]) != LAYOUT:
            raise DefinitionMismatch(
                f"queue '{q}' in Redis (prefix '{self.prefix}') was made by a server of key "
                f"layout {int(stored[2])}, this one writes layout {LAYOUT}: run one version "
                f"per prefix (or use another prefix)")
        if got != (limit, mode):
            raise DefinitionMismatch(
                f"queue '{q}' is defined in Redis (prefix '{self.prefix}') with size={got[0]} "
                f"addmode={got[1]}, but this configuration says size={limit} addmode={mode}: "
                f"every instance sharing a prefix must define its queues alike")

    # ---- the raising API (docs/ARCHITECTURE.md section 2) -----------------------------

    def add(self, q: str, key: str, value: str) -> None:
        self._call(FN["add"], q, key.encode(_ENC, _ERR), value.encode(_ENC, _ERR))

    def fetch(self, q: str) -> tuple[str, str] | None:
        items = self._call(FN["fetch"], q, 1)
        return _decode(items[0]) if items else None

    def fetch_many(self, q: str, limit: int) -> list[tuple[str, str]]:
        return [_decode(item) for item in self._call(FN["fetch"], q, limit)]

    def fetch_pending(self, q: str) -> tuple[str, str] | None:
        """`fetch` whose removal counts only once `settle(True)` says so; `settle(False)`
        puts the item back at the head.  Until then nobody else sees it; should this
        process die or stall for HOLD_LEASE_MS first, the next fetch of that queue puts
        it back (and a late settle raises RuntimeError).  None when empty."""
        self._undo_unsettled()
        held = self._call(FN["hold"], q, HOLD_LEASE_MS, 1)  # {seq, item} or {}
        if not held:
            return None
        self._pending = (q, held[0])
        return _decode(held[1])

    def fetch_many_pending(self, q: str, limit: int) -> list[tuple[str, str]]:
        """`fetch_many` held as `fetch_pending` holds one item (the same lease and
        settle): `settle(False)` puts every item back at the head, in order."""
        self._undo_unsettled()
        flat = self._call(FN["hold"], q, HOLD_LEASE_MS, limit)
        if flat:
            self._pending = (q, flat[0::2])
        return [_decode(item) for item in flat[1::2]]

    def _undo_unsettled(self) -> None:
        if self._pending is not None:
            _log.error("a pending fetch was never settled: it is undone")
            try:
                self.settle(False)
            except RuntimeError:
                pass

    def settle(self, commit: bool) -> None:
        """Commit (True) or give back (False) what fetch_pending holds; nothing held: no-op.
        RuntimeError when the hold had already ended (its lease ran out: the item is
        back in the queue); EngineUnavailable when Redis cannot be told (the lease gives
        the item back)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        q, seq = pending
        if type(seq) is list:  # fetch_many_pending's items
            done = self._call(FN["settle_many"], q, 1 if commit else 0, *seq)
        else:
            done = self._call(FN["settle"], q, seq, 1 if commit else 0)
        if not done:
            raise RuntimeError("the pending fetch was undone before it was settled")

    # ---- at-least-once delivery (contract.Claiming) -------------------------------

    def claim(self, q: str, limit: int, lease: float) -> list[Claim]:
        """Up to `limit` items, oldest first, each held for `lease` seconds unless acked
        first; then it goes back to the head of its queue for the next claim or fetch.
        Items whose lease ended are given back before taking.  One round trip."""
        flat = self._call(FN["claim"], q, limit, max(0, round(lease * 1000)))
        return [Claim(flat[i], *_decode(flat[i + 1]), int(flat[i + 2]))
                for i in range(0, len(flat), 3)]

    def ack(self, q: str, tokens: Sequence[bytes]) -> int:
        """Drop the claimed items `tokens` (handled); how many were still held."""
        return int(self._call(FN["ack"], q, *tokens)) if tokens else 0

    def renew(self, q: str, tokens: Sequence[bytes], lease: float) -> int:
        """End the holds of `tokens` `lease` seconds from now (0: give them back at the
        next claim or fetch); how many were still held."""
        if not tokens:
            return 0
        return int(self._call(FN["renew"], q, max(0, round(lease * 1000)), *tokens))

    def size(self, q: str) -> int:
        try:
            meta = self._meta[q]
        except KeyError:
            raise UnknownQueue(q) from None
        try:
            n = self._exec("HGET", meta, "n")
        except RedisError as exc:
            raise _unavailable(exc) from None
        if n is None:  # Redis lost the queue
            self._define(q)
            return 0
        return int(n)

    def _pipelined(self, command: str, *fields: str) -> list[Any]:
        """`command meta *fields` for every queue in definition order: one round trip per
        node (a cluster pipeline groups the queues by node)."""
        try:
            if self._direct is not None:
                replies = self._direct.pipeline([(command, self._meta[q], *fields)
                                                 for q in self._names])
            else:
                pipe = self._client.pipeline(transaction=False)
                for q in self._names:
                    pipe.execute_command(command, self._meta[q], *fields)
                replies = pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from None
        missing = [q for q, r in zip(self._names, replies, strict=True)
                   if r is None or (isinstance(r, list) and r[0] is None)]
        for q in missing:
            self._define(q)
        return replies

    def sizes(self) -> list[tuple[str, int]]:
        """(name, size) for every queue, in REVERSE definition order (as OpenSIPS lists)."""
        replies = self._pipelined("HGET", "n")
        return [(q, int(n or 0)) for q, n in zip(reversed(self._names), reversed(replies),
                                                 strict=True)]

    def stats(self) -> dict[str, QueueStats]:
        out = {}
        for q, r in zip(self._names, self._pipelined("HMGET", *_STATS_FIELDS), strict=True):
            n, f, ds, dm, ba, bf, bds, bdm = (int(x or 0) for x in r)
            out[q] = QueueStats(n, n + f + ds + dm - ba, f - bf, ds - bds, dm - bdm)
        return out

    def snapshot(self, q: str) -> list[tuple[str, str]]:
        """Every queued (key, value), oldest first; nothing removed.  O(n)."""
        return [_decode(item) for item in self._call(FN["snapshot"], q)]

    def reset_stats(self, q: str | None = None, counter: str | None = None) -> None:
        """Zero added/fetched/dropped_* (or only `counter`) of one queue or all."""
        if counter is None:
            which: Sequence[str] = _COUNTERS
        elif counter in _COUNTER_NAMES:
            which = (_COUNTERS[_COUNTER_NAMES.index(counter)],)
        else:
            raise ValueError(f"no resettable counter {counter!r}")
        for name in [q] if q is not None else self._names:
            self._call(FN["reset"], name, *which)

    # ---- checks (tests) ---------------------------------------------------------------

    def check_invariants(self) -> None:
        """Read every queue's keys and check the list, the index, the holds and the
        counters against each other; ArenaCorrupt listing what is wrong.  O(n)."""
        problems: list[str] = []
        for q in self._names:
            keys = self._keys[q]
            problems += _check_queue(q, self._defs[q][1],
                                     [self._client.hgetall(k) for k in keys[:3]],
                                     self._client.zrange(keys[3], 0, -1))
        if problems:
            raise ArenaCorrupt(problems)


def _unavailable(exc: Exception) -> EngineUnavailable:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return EngineUnavailable(f"Redis unavailable: {text}")


def _check_queue(q: str, mode: int, hashes: list[dict[bytes, bytes]],
                 held: list[bytes]) -> list[str]:
    meta, fields, index = ({k: v for k, v in h.items() if k not in _PAD} for h in hashes)
    items = {k: v for k, v in fields.items() if k.isdigit()}
    nxt = {k[1:]: v for k, v in fields.items() if k.startswith(b"n")}
    prv = {k[1:]: v for k, v in fields.items() if k.startswith(b"p")}
    claims = {k[1:]: v for k, v in fields.items() if k.startswith(b"c")}
    bad: list[str] = []
    if b"mode" not in meta:
        return [f"{q}: not defined"]
    if len(items) + len(nxt) + len(prv) + len(claims) != len(fields):
        bad.append(f"{q}: stray fields in the items hash")
    if not set(claims) <= set(items):
        bad.append(f"{q}: claim counts {sorted(claims)} of items that are gone")
    seen: list[bytes] = []
    seq, prev = meta.get(b"h"), None
    while seq is not None and len(seen) <= len(items):
        seen.append(seq)
        if prv.get(seq) != prev:
            bad.append(f"{q}: prev of {seq!r} is {prv.get(seq)!r}, not {prev!r}")
        if seq not in items:
            bad.append(f"{q}: listed item {seq!r} has no record")
        prev, seq = seq, nxt.get(seq)
    if meta.get(b"t") != prev:
        bad.append(f"{q}: tail is {meta.get(b't')!r}, the list ends at {prev!r}")
    c = {k: int(meta.get(k.encode(), 0)) for k in ("n", "f", "ds", "dm")}
    if c["n"] != len(seen) or min(c.values()) < 0:
        bad.append(f"{q}: count {c} against {len(seen)} listed")
    if set(items) != set(seen) | set(held) or set(seen) & set(held):
        bad.append(f"{q}: records {sorted(items)} against listed {seen} + held {list(held)}")
    if set(nxt) != set(seen[:-1]) or set(prv) != set(seen[1:]):
        bad.append(f"{q}: stray links {sorted(nxt)} / {sorted(prv)}")
    if mode:
        want = {_decode(items[s])[0].encode(_ENC, _ERR): s for s in seen if s in items}
        if len(want) != len(seen) or index != want:
            bad.append(f"{q}: index {index} against the queued keys {want}")
    elif index:
        bad.append(f"{q}: an index for an addmode 0 queue")
    return bad
