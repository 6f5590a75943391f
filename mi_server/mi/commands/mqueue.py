"""The mqueue module's MI commands (OpenSIPS 3.6 modules/mqueue) plus our `mq_add`.

Results and errors are those of docs/commands.md; keys and values are
emitted literally (no printf formatting, no loss of empty items).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from jsonrpcserver.exceptions import JsonRpcError
from jsonrpcserver.result import Error, Result

from mi_server.engine.errors import ArenaFull, UnknownQueue
from mi_server.mi.context import MIContext
from mi_server.mi.errors import bad_type
from mi_server.mi.params import get_int, get_str
from mi_server.mi.registry import ReplyTooLarge
from mi_server.mi.results import success

NO_SUCH_QUEUE = (404, "No such queue")
EMPTY_QUEUE = (404, "Empty queue")
OUT_OF_MEMORY = (500, "Out of memory")

HELP_GET_SIZES = "Params: none ; Get the size of all memory queues."
HELP_GET_SIZE = "Params: mqueue; Get the size of a memory queue."
HELP_FETCH = (
    "Params: mqueue [limit]; Fetch one (or a max limit of) key-value pair from a memory queue."
)
HELP_ADD = "Params: mqueue key value; Add a key-value pair to a memory queue."

log = logging.getLogger(__name__)

# A full arena refuses every add until something is fetched: one line per this many
# seconds (per process), with the count refused since the last line, not one per request.
FULL_LOG_EVERY = 10.0


class _FullArenaLog:
    """Rate-limited log of mq_add refused for a full arena (touched only on refusal)."""

    def __init__(self) -> None:
        self.last = -FULL_LOG_EVERY
        self.unlogged = 0

    def refused(self, queue: str, exc: BaseException) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.last < FULL_LOG_EVERY:
            return
        log.warning("mq_add to queue '%s' refused (500 Out of memory): %s (%d add(s) "
                    "refused since the last such line, logged once per %.0f s at most): "
                    "fetch items or raise shm_size", queue, exc, self.unlogged,
                    FULL_LOG_EVERY)
        self.last, self.unlogged = now, 0


_full_arena = _FullArenaLog()


def mq_get_size(ctx: MIContext, params: dict[str, Any]) -> Result:
    name = get_str(params, "name")
    try:
        size = ctx.engine.size(name)
    except UnknownQueue:
        return Error(*NO_SUCH_QUEUE)
    return success({"Queue": {"name": name, "size": size}})


def mq_get_sizes(ctx: MIContext, params: dict[str, Any]) -> Result:
    # engine.sizes() already gives reverse definition order, as OpenSIPS lists them.
    return success({"Queue": [{"name": n, "size": s} for n, s in ctx.engine.sizes()]})


def mq_fetch(ctx: MIContext, params: dict[str, Any]) -> Result:
    name = get_str(params, "name")
    if "limit" in params:
        # Check order (OpenSIPS): name type, then limit, then the queue.
        limit = get_int(params, "limit")
        if limit < 1:
            # Ours: always this error (OpenSIPS's depends on leftover error state).
            raise bad_type("limit")
        try:
            items = ctx.engine.fetch_many(name, limit)
        except UnknownQueue:
            return Error(*NO_SUCH_QUEUE)
        return success([{"key": k, "value": v} for k, v in items])
    try:
        item = ctx.engine.fetch(name)
    except UnknownQueue:
        return Error(*NO_SUCH_QUEUE)
    if item is None:
        return Error(*EMPTY_QUEUE)
    return success({"Item": {"key": item[0], "value": item[1]}})


# The engine stays locked while a held reply is encoded (by orjson only, see
# MICore._hold): items longer than this are put back and fetched the staged way instead,
# so the lock is held for microseconds (measured: 4,096 control characters, each escaped
# as \u00XX, ~22 us; 4,096 letters or emoji, 0.3-0.9 us).
HOLD_MAX_CHARS = 4 * 1024


def mq_fetch_pending(
    ctx: MIContext, params: dict[str, Any], budget: int | None = None
) -> tuple[Any, Callable[[bool], None]] | None:
    """mq_fetch with its removal held pending (Engine.fetch_pending, or for a `limit`
    fetch_many_pending where the engine has it): the result value and the engine's
    settle, which commits or undoes the removal; an error raised as JsonRpcError, with
    nothing held.  (The value itself, not a Result: MICore._hold encodes it straight to
    bytes while the engine is locked.)

    `budget` None (the FIFO's compiled path): None, so that the request is staged and
    run as usual, for items over HOLD_MAX_CHARS in all (put back first) and for a limit
    the engine cannot hold.  A `budget` (the reply's byte limit, mi_datagram): held
    whatever the size; ReplyTooLarge, with everything put back, when the items alone
    have more characters than the budget has bytes (each takes at least one byte)."""
    name = get_str(params, "name")
    engine = ctx.engine
    cap = HOLD_MAX_CHARS if budget is None else budget
    if "limit" in params:
        limit = get_int(params, "limit")
        if limit < 1:
            raise bad_type("limit")
        hold_many = getattr(engine, "fetch_many_pending", None)
        if hold_many is None:  # this engine cannot hold a bulk: staged as before
            return None
        try:
            items = hold_many(name, limit)
        except UnknownQueue:
            raise JsonRpcError(*NO_SUCH_QUEUE) from None
        try:
            if sum(len(k) + len(v) for k, v in items) > cap:
                engine.settle(False)
                if budget is None:
                    return None
                raise ReplyTooLarge
            return [{"key": k, "value": v} for k, v in items], engine.settle
        except BaseException:
            engine.settle(False)  # never leave the engine locked (nothing once settled)
            raise
    try:
        item = engine.fetch_pending(name)
    except UnknownQueue:
        raise JsonRpcError(*NO_SUCH_QUEUE) from None
    if item is None:
        raise JsonRpcError(*EMPTY_QUEUE)
    try:
        key, value = item
        if len(key) + len(value) > cap:
            engine.settle(False)
            if budget is None:
                return None
            raise ReplyTooLarge
        return {"Item": {"key": key, "value": value}}, engine.settle
    except BaseException:
        engine.settle(False)  # never leave the engine locked (nothing once settled)
        raise


def mq_add(ctx: MIContext, params: dict[str, Any]) -> Result:
    name = get_str(params, "name")
    key = get_str(params, "key")
    value = get_str(params, "value")
    try:
        ctx.engine.add(name, key, value)
    except UnknownQueue:
        return Error(*NO_SUCH_QUEUE)
    except ArenaFull as exc:
        _full_arena.refused(name, exc)
        return Error(*OUT_OF_MEMORY)
    return success("OK")
