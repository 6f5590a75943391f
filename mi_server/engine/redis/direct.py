"""The Redis engine's commands on one connection this process keeps, instead of
redis-py's generic `Redis.execute_command` path (docs/redis.md, Performance).

That path takes a connection from the pool and gives it back (a lock, a fork check, a
poll for stray data), wraps the call in a retry closure, packs the command through a
serializer that inspects every argument, looks up a reply callback and records
observability metrics: on a 2-CPU host about a third of a bare round trip's client
time.  Here a command is packed by hiredis in one C call, written and its reply read
with the connection's own methods, which keep redis-py's behaviour: a time-out or a
broken link disconnects the connection and raises TimeoutError or ConnectionError, and
an error reply raises its ResponseError (OutOfMemoryError for OOM).

A command is sent at most once.  A command whose bytes were written may have run even
when its reply never comes (Redis ran it, then the connection was reset: a proxy, a
CLIENT KILL, a crash), so it is never sent again: a fetch sent twice would take the next
item too and deliver one of them, an add would queue its item twice.  Only a command that
could not be written (its send raised) is sent again, once, on a new connection.  A
stale connection (Redis restarted or closed it while idle) is found before the send
instead: a connection with anything to read between two commands (its end of file, an
error, stray bytes) is closed and a new one opened.

One engine per process uses it from one thread (the engine contract); a forked child
drops the parent's connection without closing it (forget) and takes its own.
"""

from __future__ import annotations

import select
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
        conn = self._ready()
        try:
            self._write(conn, packed)
            return conn.read_response()  # a failure here is in doubt: never sent again
        except ResponseError:  # a whole error reply was read: the connection is in step
            raise
        except BaseException:
            conn.disconnect()  # a reply left unread must not answer the next command
            raise

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to `commands`, sent together (one round trip); an error reply
        raises once every reply is read, so the connection stays in step."""
        packed = b"".join(_pack(tuple(c)) for c in commands)
        conn = self._ready()
        try:
            self._write(conn, packed)
            return self._replies(conn, len(commands))
        except ResponseError:
            raise
        except BaseException:
            conn.disconnect()
            raise

    @staticmethod
    def _write(conn: Any, packed: bytes) -> None:
        try:
            conn.send_packed_command((packed,), False)
        except RedisConnectionError:  # not written whole, so not run: once more
            conn.disconnect()
            conn.send_packed_command((packed,), False)  # reconnects

    def _ready(self) -> Any:
        """The connection, checked: one with anything to read before a command is sent
        (end of file, an error, stray bytes) is stale and reconnects on the send."""
        conn = self._conn or self._take()
        sock = conn._sock
        if sock is not None and select.select((sock,), (), (), 0)[0]:
            conn.disconnect()
        return conn

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
