"""The JSON-RPC 2.0 core: request bytes -> reply bytes (None when nothing is to be sent).

Pure: no I/O, no knowledge of HTTP or FIFOs. The steps follow OpenSIPS 3.6 mi/mi.c in its
check order: parse, invalid request, method, params (recipe match), call, print.

Why our own pipeline and not jsonrpcserver.dispatch: its dispatcher cannot express the
OpenSIPS rules (case-insensitive top-level members with the first duplicate winning, the
request id echoed on -32600, "Invalid Request" spelling, no `data` on -32601/-32700,
recipe matching instead of Python signature binding, 32-bit id clamping) and costs
~25-75 us per request. We keep jsonrpcserver's result values (Success/Error, JsonRpcError)
as the contract between this core and the commands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from jsonrpcserver.exceptions import JsonRpcError
from jsonrpcserver.result import Error, Result
from jsonrpcserver.sentinels import NODATA
from oslash.either import Left

from mi_server.engine.errors import EngineUnavailable
from mi_server.mi import errors as E
from mi_server.mi.context import MIContext
from mi_server.mi.jsonvalues import (
    INT_MAX,
    INT_MIN,
    JObject,
    ParseError,
    encode,
    encode_fast,
    encode_str,
    int32,
    parse,
    scan_value,
    to_bytes,
)
from mi_server.mi.registry import Command, Registry, ReplyTooLarge

log = logging.getLogger(__name__)

_NO_ID = object()  # the request has no `id` member: a notification
_ID_NULL = "null"
_MEMBERS = ("jsonrpc", "method", "params", "id")
_MEMBER_SET = frozenset(_MEMBERS)


def error_text(code: int, message: str, data: Any, id_text: str) -> str:
    """A compact error reply; `data` only when there is detail."""
    if data is NODATA or data is None:
        return (
            f'{{"jsonrpc":"2.0","error":{{"code":{code},"message":{encode(message)}}},'
            f'"id":{id_text}}}'
        )
    return (
        f'{{"jsonrpc":"2.0","error":{{"code":{code},"message":{encode(message)},'
        f'"data":{encode(data)}}},"id":{id_text}}}'
    )


_PARSE_ERROR_REPLY = error_text(*E.PARSE_ERROR, NODATA, _ID_NULL).encode()
_SERVER_ERROR_REPLY = error_text(*E.SERVER_ERROR, NODATA, _ID_NULL).encode()
_INVALID_REQUEST_NULL = error_text(*E.INVALID_REQUEST, NODATA, _ID_NULL)


def _members(obj: JObject) -> dict[str, Any]:
    """The four top-level members, names matched case-insensitively, first duplicate wins
    (cJSON_GetObjectItem walks the members in order with strcasecmp).  MICore._one takes
    a shortcut first for what clients send (only the lower-case names, each once)."""
    found: dict[str, Any] = {}
    for name, value in obj:
        # ASCII-only folding, like strcasecmp: 'İd'.lower() must not become 'id'.
        key = name.lower() if name.isascii() else name
        if key in _MEMBERS and key not in found:
            found[key] = value
    return found


def match_recipe(
    cmd: Command, params: list | JObject | None
) -> tuple[tuple[str, ...] | None, str]:
    """OpenSIPS get_cmd_recipe(): the recipe these params fit, or (None, error detail)."""
    detail = E.DET_NO_PARAMS
    found: tuple[str, ...] | None = None
    if params is None:
        for recipe in cmd.recipes:
            if not recipe:
                return recipe, ""
        return None, detail
    positional = type(params) is list
    count = len(params)  # named: duplicates count (cJSON)
    names = None if positional else {name for name, _ in params}
    for recipe in cmd.recipes:
        if not recipe or len(recipe) != count:
            continue
        if positional:
            if found is not None:
                return None, E.DET_AMBIGUOUS
            found = recipe
        else:
            detail = E.DET_MATCH_PARAMS
            # exact, case-sensitive names (strcmp); issuperset: one C call, not a generator
            if names.issuperset(recipe):
                return recipe, ""
    return (found, "") if found is not None else (None, detail)


def _bind(params: JObject | None) -> dict[str, Any]:
    """Named params by name (positional ones are bound in MICore._one)."""
    if params is None:
        return {}
    bound: dict[str, Any] = {}
    for name, value in params:
        bound.setdefault(name, value)  # a matched recipe has each name exactly once
    return bound


class Staged:
    """A request checked by `MICore.stage` whose command has side effects and has not run:
    `MICore.finish` runs it.  (`cmd` None: a batch, `params` its list of requests.)"""

    __slots__ = ("cmd", "params", "id_text")

    def __init__(self, cmd: Command | None, params: Any, id_text: str | None) -> None:
        self.cmd, self.params, self.id_text = cmd, params, id_text


# `stage_checked`'s answer for a command whose change is held pending (Command.pending):
# the reply, made already, and settle(commit), which the transport calls at once, True
# once the reply FIFO is open, False when it cannot be.
Held = tuple[bytes, Callable[[bool], None]]
HOLD: Literal["hold"] = "hold"  # _dispatch's `defer` for stage_checked: hold if it can


class _TooLarge:
    """`stage_held`'s answer when the reply would be over the transport's limit: nothing
    was changed (a held change was undone); the transport says so in its own words."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_LARGE"


TOO_LARGE = _TooLarge()


class MICore:
    """JSON-RPC request bytes -> reply bytes over one command registry and context."""

    def __init__(self, registry: Registry, ctx: MIContext) -> None:
        self.registry = registry
        self.ctx = ctx
        # stage_held's reply limit while it runs (None: stage_checked's rule, see _hold)
        self._budget: int | None = None
        self._command = registry.lookup  # a dict's get: no Python frame per request

    # A transport that already decodes the request while framing it (the FIFO) uses this
    # scanner and hands the value to `stage`, so the JSON is read once, not twice.
    scan_value = staticmethod(scan_value)

    def handle(self, request: bytes) -> bytes | None:
        """The compact JSON reply for `request`; None for a notification (send nothing)."""
        try:
            doc = parse(request)
        except ParseError:
            return _PARSE_ERROR_REPLY
        except Exception:  # as in _reply: a bug must still get an answer
            log.exception("MI core failed to parse a request")
            return _SERVER_ERROR_REPLY
        return self._reply(doc, False)  # type: ignore[return-value]

    def stage(self, doc: Any) -> bytes | None | Staged:
        """`handle` for a request already decoded by `scan_value`, split at the command
        call, for a transport that must not run a command it cannot answer but wants the
        reply ready before it knows (the FIFO listener: see mi_fifo.listener, answer).
        The reply (bytes, or None for a notification) when answering runs nothing with side
        effects: an error found while checking, or a command registered with
        side_effects=False, which this runs.  Otherwise a `Staged` request, checked but not
        run, for `finish`."""
        return self._reply(doc, True)

    def finish(self, staged: Staged) -> bytes | None:
        """Run what `stage` held back: the reply bytes, None for a notification."""
        try:
            if staged.cmd is None:
                text = self._batch(staged.params)
            else:
                text = self._run(staged.cmd, staged.params, staged.id_text)
            return None if text is None else to_bytes(text)
        except Exception:  # as in _reply
            log.exception("MI core failed on a request")
            return _SERVER_ERROR_REPLY

    def _reply(self, doc: Any, defer: bool) -> bytes | None | Staged:
        """The reply bytes for a decoded request; with `defer`, a Staged instead of running
        a command with side effects (a batch is deferred whole)."""
        try:
            if type(doc) is list:
                text = Staged(None, doc, None) if defer else self._batch(doc)
            else:
                text = self._one(doc, defer)
            # reply text to bytes; None (a notification) and a Staged pass through
            return to_bytes(text) if type(text) is str else text
        except Exception:  # a bug in the core itself: still answer, never crash a worker
            log.exception("MI core failed on a request")
            return _SERVER_ERROR_REPLY

    def _batch(self, docs: list) -> str | None:
        # Ours: a JSON-RPC 2.0 batch (OpenSIPS answers one -32600 to any top-level array).
        if not docs:
            return _INVALID_REQUEST_NULL
        replies = [r for r in map(self._one, docs) if r is not None]
        return f"[{','.join(replies)}]" if replies else None

    def _one(self, doc: Any, defer: bool = False) -> str | None | Staged:
        """One request's reply text (None: a notification).  `defer`: a command with
        side effects is not run; the checked request comes back as a Staged instead."""
        if type(doc) is not JObject:  # a scalar or (inside a batch) a nested array
            return _INVALID_REQUEST_NULL
        m = dict(doc)
        # only the four lower-case names, each once: then no case folding or
        # first-duplicate rule can change anything; else the exact walk
        if len(m) != len(doc) or not m.keys() <= _MEMBER_SET:
            m = _members(doc)
        id_value = m.get("id", _NO_ID)
        method = m.get("method")
        params = m.get("params")
        version = m.get("jsonrpc")
        invalid = (
            type(version) is not str
            or version != "2.0"
            or type(method) is not str
            or ("params" in m and type(params) is not list and type(params) is not JObject)
        )
        # the id as echoed: strings as given, numbers as cJSON's 32-bit valueint, else null
        # (the common string id first)
        id_type = type(id_value)
        if id_type is str:
            id_text = encode_str(id_value)
        elif id_type is int and INT_MIN < id_value < INT_MAX:
            id_text = str(id_value)  # int32() would return it unchanged
        elif id_type is int or id_type is float:
            id_text = str(int32(id_value))
        elif id_value is None:
            id_text = _ID_NULL
        elif id_value is _NO_ID:
            id_text = None  # notification
        else:
            invalid = True
            id_text = _ID_NULL  # OpenSIPS cannot print such an id; ours answers with null
        if invalid:
            return _INVALID_REQUEST_NULL if id_text is None else error_text(
                *E.INVALID_REQUEST, NODATA, id_text
            )
        return self._dispatch(method, params, id_text, defer)

    def stage_checked(self, method: str, params: list | JObject | None,
                      id_text: str) -> bytes | None | Staged | Held:
        """`stage` for a request whose envelope a transport has already checked exactly as
        `_one` does (mi_fifo's compiled fast path: version "2.0", a str method, params a
        list, a JObject or absent, `id_text` the id as echoed): the reply, a `Staged`
        command with side effects for `finish`, or, for a command that can hold its change
        pending (Command.pending), a `Held` (reply, settle): the command has run, and its
        change counts only once the transport calls settle(True).  The transport must
        settle at once, with nothing between that can block or touch the engine, because
        the engine is locked until then.  Never raises: a failure is answered like any
        other (and leaves nothing held)."""
        try:
            text = self._dispatch(method, params, id_text, HOLD)
            return to_bytes(text) if type(text) is str else text
        except Exception:  # as in _reply
            log.exception("MI core failed on a request")
            return _SERVER_ERROR_REPLY

    def run_checked(self, method: str, params: list | JObject | None,
                    id_text: str) -> bytes | None:
        """`handle` for a request whose envelope a transport has already checked exactly
        as `_one` does (the HTTP worker's compiled fast path: see stage_checked): the
        command runs, whatever its side effects, as `handle` runs it; the reply bytes
        (None only for a notification, which that path never passes).  Never raises."""
        try:
            text = self._dispatch(method, params, id_text, False)
            return None if text is None else to_bytes(text)  # type: ignore[arg-type]
        except Exception:  # as in _reply
            log.exception("MI core failed on a request")
            return _SERVER_ERROR_REPLY

    def stage_held(self, doc: Any, budget: int) -> bytes | None | Staged | Held | _TooLarge:
        """`stage` for a transport that learns whether its reply went out only by sending
        it (mi_datagram): a command with a pending form (mq_fetch, one item or a bulk) runs
        held whatever its size, as a `Held` (reply, settle) with the engine locked; the
        transport sends the reply and settles at once, True if it went out.  TOO_LARGE when
        the reply would exceed `budget` bytes (nothing changed: a held change is undone
        first).  Other commands with side effects come back Staged (for `finish`), the
        rest as reply bytes or None (a notification, which runs; nothing is held for it).
        A batch asking for a command with a pending form is one -32600, nothing run (see
        below); any other batch comes back Staged.  Never raises."""
        self._budget = budget
        try:
            if type(doc) is list:
                if self._holds(doc):
                    # a batch's reply size is known only once its fetches have taken their
                    # items, and its commands cannot be held together: OpenSIPS's answer to
                    # any batch over mi_datagram, and nothing taken
                    return to_bytes(_INVALID_REQUEST_NULL)
                return Staged(None, doc, None)
            text = self._one(doc, HOLD)  # type: ignore[arg-type]
            return to_bytes(text) if type(text) is str else text
        except Exception:  # as in _reply
            log.exception("MI core failed on a request")
            return _SERVER_ERROR_REPLY
        finally:
            self._budget = None

    def stage_checked_held(self, method: str, params: list | JObject | None, id_text: str,
                           budget: int) -> bytes | Staged | Held | _TooLarge:
        """`stage_held` for one request whose envelope a transport has already checked
        exactly as `_one` does (the datagram listener's compiled fast path: see
        stage_checked; the request has an id): the same answers as `stage_held` gives
        for that request.  Never raises."""
        self._budget = budget
        try:
            text = self._dispatch(method, params, id_text, HOLD)
            return to_bytes(text) if type(text) is str else text  # type: ignore[return-value]
        except Exception:  # as in _reply
            log.exception("MI core failed on a request")
            return _SERVER_ERROR_REPLY
        finally:
            self._budget = None

    def _holds(self, docs: list) -> bool:
        """Whether a batch asks for a command with a pending form (mq_fetch)."""
        for doc in docs:
            if type(doc) is JObject:
                method = _members(doc).get("method")
                cmd = self._command(method) if type(method) is str else None
                if cmd is not None and cmd.pending is not None:
                    return True
        return False

    def _dispatch(self, method: str, params: Any, id_text: str | None,
                  defer: bool | Literal["hold"]) -> str | None | Staged | Held:
        """`_one` after the envelope checks: the command, its params, the call.  `defer`:
        a command with side effects is not run but staged; HOLD: run with its change held
        pending where the command can (see stage_checked), else staged."""
        cmd = self._command(method)
        if cmd is None:
            return None if id_text is None else error_text(*E.METHOD_NOT_FOUND, NODATA, id_text)
        if type(params) is list and params:
            # positional params: the recipe is known from the count alone (precomputed)
            recipe = cmd.positional.get(len(params))
            if recipe is None:
                return None if id_text is None else error_text(
                    *E.INVALID_PARAMS, match_recipe(cmd, params)[1], id_text)
            # same length by construction (the recipe was picked by it); strict= would
            # cost a keyword-argument parse per request (~120 ns of ~2 us), and one param,
            # the common case, is a literal: dict(zip()) costs ~190 ns more
            if len(params) == 1:
                bound = {recipe[0]: params[0]}
            else:
                bound = dict(zip(recipe, params))  # noqa: B905
        else:
            if params is not None and not params:
                params = None  # [] and {} count as absent
            recipe, detail = match_recipe(cmd, params)
            if recipe is None:
                return None if id_text is None else error_text(*E.INVALID_PARAMS, detail, id_text)
            bound = _bind(params)
        if defer and cmd.side_effects:
            if defer is HOLD and cmd.pending is not None and id_text is not None:
                return self._hold(cmd, bound, id_text)
            return Staged(cmd, bound, id_text)
        return self._run(cmd, bound, id_text)

    def _run(self, cmd: Command, params: dict[str, Any], id_text: str | None) -> str | None:
        """Call the command; its reply text, or None for a notification (it has run)."""
        try:
            result: Result = cmd.handler(self.ctx, params)
        except Exception as exc:
            result = _failed(cmd, exc)
        if id_text is None:
            return None
        if isinstance(result, Left):
            return _error_reply(result, id_text)
        return f'{{"jsonrpc":"2.0","result":{encode(result._value.result)},"id":{id_text}}}'

    def _hold(self, cmd: Command, params: dict[str, Any],
              id_text: str) -> str | Staged | Held | _TooLarge:
        """Run a command's `pending` form: a Held when it left a change pending, the error
        reply text when it raised (nothing held), Staged when that form does not apply.
        With a budget (stage_held), TOO_LARGE when the reply would be over it, and the
        form applies whatever the size (ReplyTooLarge from the command says it is over)."""
        budget = self._budget
        try:
            held = cmd.pending(self.ctx, params, budget)  # type: ignore[misc]
        except ReplyTooLarge:  # nothing held
            return TOO_LARGE
        except Exception as exc:  # raised before anything was held
            return _error_reply(_failed(cmd, exc), id_text)
        if held is None:
            return Staged(cmd, params, id_text)
        value, settle = held
        try:
            if budget is None:
                # orjson only: its bytes are what handle() gives, and it is quick, while
                # the engine is locked; what it refuses (a lone surrogate) is staged
                body = encode_fast(value)
            else:  # whatever it is: the fetch must not run again unheld
                body = to_bytes(encode(value))
        except TypeError:
            settle(False)
            return Staged(cmd, params, id_text)
        except BaseException:
            settle(False)  # the engine must not stay locked for a reply never made
            raise
        reply = b'{"jsonrpc":"2.0","result":%b,"id":%b}' % (body, id_text.encode())
        if budget is not None and len(reply) > budget:
            settle(False)
            return TOO_LARGE
        return reply, settle


def _failed(cmd: Command, exc: Exception) -> Result:
    """The result of a command that raised: its JsonRpcError; any other exception (logged,
    so call this in the except block) is answered as OpenSIPS answers a failed handler (a
    NULL reply); -32603 is never used."""
    if isinstance(exc, JsonRpcError):
        return Error(exc.code, exc.message, exc.data)
    if isinstance(exc, EngineUnavailable):  # logged once per outage by the engine's user
        _note_unavailable(cmd, exc)
        return Error(*E.ENGINE_UNAVAILABLE)
    log.exception("MI command %s failed", cmd.name)
    return Error(*E.SERVER_ERROR, E.DET_CMD_NULL)


# A Redis outage fails every request; one log line per this many seconds says so.
UNAVAILABLE_LOG_INTERVAL = 10.0
_unavailable_logged = [-UNAVAILABLE_LOG_INTERVAL]


def _note_unavailable(cmd: Command, exc: EngineUnavailable) -> None:
    import time

    now = time.monotonic()
    if now - _unavailable_logged[0] >= UNAVAILABLE_LOG_INTERVAL:
        _unavailable_logged[0] = now
        log.warning("MI command %s: %s (answered 500 until it is back)", cmd.name, exc)


def _error_reply(result: Left, id_text: str) -> str:
    err = result._error
    return error_text(err.code, err.message, err.data, id_text)
