"""The Redis engine's commands on one connection this process keeps, instead of
redis-py's generic `Redis.execute_command` path (docs/redis.md, Performance).

That path takes a connection from the pool and gives it back (a lock, a fork check, a
poll for stray data), wraps the call in a retry closure, packs the command through a
serializer that inspects every argument, looks up a reply callback and records
observability metrics: on a 2-CPU host about a third of a bare round trip's client
time.  Here a command is packed by hiredis in one C call, written and its reply read
with the connection's own methods, which keep redis-py's behaviour: a time-out or a
broken link disconnects the connection and raises TimeoutError or ConnectionError, and
an error reply raises its ResponseError (OutOfMemoryError for OOM).  The retry policy is
make_client's: one more attempt, on a fresh connection, after a ConnectionError only
(never after a time-out, which may have run the command).

One engine per process uses it from one thread (the engine contract); a forked child
drops the parent's connection without closing it (forget) and takes its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

_pack = hiredis.pack_command


class DirectLink:
    """Commands to the Redis behind `client` (a redis.Redis, not a cluster client) on
    one connection of its pool, held until close."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None

    def execute(self, *args: Any) -> Any:
        """The reply to one command (str, bytes or int arguments)."""
        return self.send(_pack(args))

    def send(self, packed: bytes) -> Any:
        """The reply to one command already packed."""
        conn = self._conn or self._take()
        try:
            conn.send_packed_command((packed,), False)
            return conn.read_response()
        except RedisConnectionError:
            conn.disconnect()  # done already by the connection on most errors
        conn.send_packed_command((packed,), False)  # reconnects
        return conn.read_response()

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to `commands`, sent together (one round trip); an error reply
        raises once every reply is read, so the connection stays in step."""
        packed = b"".join(_pack(tuple(c)) for c in commands)
        conn = self._conn or self._take()
        try:
            conn.send_packed_command((packed,), False)
            return self._replies(conn, len(commands))
        except RedisConnectionError:
            conn.disconnect()
        conn.send_packed_command((packed,), False)
        return self._replies(conn, len(commands))

    @staticmethod
    def _replies(conn: Any, n: int) -> list[Any]:
        replies: list[Any] = []
        error: ResponseError | None = None
        for _ in range(n):
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                error = error or exc
                replies.append(exc)
        if error is not None:
            raise error
        return replies

    def _take(self) -> Any:
        self._conn = self._pool.get_connection()
        return self._conn

    def forget(self) -> None:
        """In a forked child: the connection is the parent's; leave it alone."""
        self._conn = None

    def close(self) -> None:
        """Give the connection back to the pool (its client closes it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)
