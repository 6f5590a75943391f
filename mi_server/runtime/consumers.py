"""Consumer processes: drain one queue and hand each item to a handler.

Each consumer process loops: take up to `batch` items from its queue in one locked step
(`engine.fetch_many`), call the handler for each, and sleep `interval` seconds when the
queue is empty. Several processes may drain the same queue; each item goes to exactly one.

Handlers (`ConsumerConfig.handler`):
- `package.module:function` — imported once (by the supervisor, before forking, so a typo
  fails start-up) and called as `function(key, value)`; raising is a failure.
- anything else is a command line, split into words like a shell would (shlex) but never
  run through one (no $VAR expansion, no globs, pipes or redirections), run once per item
  with `MQ_QUEUE`, `MQ_KEY`, `MQ_VALUE` added to its environment and the value, exactly
  (UTF-8, no newline added), on its stdin, so that line tools such as `logger -t TAG`
  work as they are; a non-zero exit status is a failure. A value longer than one
  environment string may be on Linux (128 KiB with its name) is on stdin only, with
  `MQ_VALUE` unset, so that the command still starts.

A failing handler is logged with the item (queue, key and a truncated value) and the
consumer goes on with the next item.

Delivery (`ConsumerConfig.delivery`, docs/consumers.md):
- **at most once** (the default, every engine): items are removed from the queue before
  their handler runs and a failed item is not retried, so a consumer killed mid-handler
  (kill -9, the supervisor's SIGKILL after the stop grace period) loses that item and the
  untouched rest of its batch (up to `batch` items).  On SIGTERM/SIGINT a consumer
  finishes the item in hand, puts the untouched rest of its batch back at the tail of the
  queue (where the dbmode save at stop finds them; addmode and size apply again) and
  returns.
- **at least once** (engines that offer contract.Claiming: Redis): the batch is claimed
  with a lease of `lease` seconds, each item acknowledged once its handler succeeded; a
  failed item comes back to the queue's head `retry` seconds later, and the items of a
  consumer that died or stalled come back when their lease ends, for any consumer of any
  instance to claim.  The lease of a batch's rest is renewed while the batch is worked on.
  On SIGTERM/SIGINT the rest of the batch is given back at once (to the head).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mi_server.engine.contract import Claim, Claiming, Engine
from mi_server.engine.errors import EngineUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[str, str], None]  # (key, value); raises on failure

# `pkg.module:function`; a command line has a space, a slash or other characters instead.
CALLABLE_FORM = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
LOGGED_VALUE_CHARS = 200
# Linux's MAX_ARG_STRLEN (32 pages): execve refuses one "NAME=value\0" string longer
# than this with E2BIG, and the command would not start at all
ENV_STRING_MAX = 32 * 4096
UNAVAILABLE_RETRY = 1.0  # seconds between fetch attempts while the engine is unavailable


@dataclass(frozen=True)
class AtLeastOnce:
    """The settings of at-least-once delivery (config.py's consumers section)."""

    lease: float = 30.0  # seconds a claimed item stays out of the queue without an ack
    retry: float = 1.0  # seconds before a failed item comes back to the queue
    max_deliveries: int = 0  # an item claimed more often is dropped, logged (0: never)


class HandlerError(ValueError):
    """A handler that cannot be used (bad import, empty or unknown command); one clear line."""


class CommandFailed(RuntimeError):
    """A command-line handler exited with a non-zero status."""


def resolve_handler(text: str, queue: str) -> Handler:
    """Turn the configured handler string into a callable; raises HandlerError."""
    where = f"consumer for queue '{queue}': handler '{text}'"
    if CALLABLE_FORM.match(text):
        module_name, _, attr = text.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # any import-time error is a configuration problem
            raise HandlerError(f"{where}: cannot import '{module_name}': {exc}") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise HandlerError(f"{where}: '{module_name}' has no function '{attr}'")
        return fn
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise HandlerError(f"{where}: {exc}") from None
    if not argv:
        raise HandlerError(f"{where}: empty command")
    if shutil.which(argv[0]) is None:
        raise HandlerError(f"{where}: command not found: '{argv[0]}'")
    return _command_handler(argv, queue)


def _command_handler(argv: list[str], queue: str) -> Handler:
    def run(key: str, value: str) -> None:
        # surrogateescape: as os.environ encodes the environment
        data = value.encode("utf-8", "surrogateescape")
        env = dict(os.environ, MQ_QUEUE=queue, MQ_KEY=key, MQ_VALUE=value)
        if len(data) + len("MQ_VALUE=") + 1 > ENV_STRING_MAX:
            del env["MQ_VALUE"]  # on stdin only (see the module's docstring)
        # A command that exits without reading its stdin is fine (communicate ignores the
        # broken pipe).
        rc = subprocess.run(argv, env=env, input=data, check=False).returncode
        if rc != 0:
            raise CommandFailed(f"command {argv[0]!r} exited with status {rc}")

    return run


def describe_item(queue: str, key: str, value: str) -> str:
    """The item for a log line: queue, key and a value cut to a readable length."""
    shown = value if len(value) <= LOGGED_VALUE_CHARS else value[:LOGGED_VALUE_CHARS] + "..."
    return f"queue={queue!r} key={key!r} value={shown!r}"


class _StopFlag:
    """Set by SIGTERM/SIGINT; a self-pipe wakes the empty-queue sleep at once."""

    def __init__(self) -> None:
        self.stopping = False
        self._r, w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def sleep(self, seconds: float) -> None:
        if not self.stopping:
            select.select([self._r], [], [], seconds)
        try:
            os.read(self._r, 512)  # drain the wakeup bytes
        except BlockingIOError:
            pass


def run_consumer(engine: Engine, queue: str, handler: Handler, interval: float, batch: int,
                 name: str, at_least_once: AtLeastOnce | None = None) -> None:
    """Drain `queue` through `handler` until SIGTERM/SIGINT. `name` is for log lines.
    `at_least_once`: claim and acknowledge (the engine must offer Claiming).

    While the engine is unavailable (Redis down) it says so once, retries every
    UNAVAILABLE_RETRY seconds (or `interval`, if longer), and says when it is back."""
    stop = _StopFlag()
    log.debug("%s: started", name)
    if at_least_once is not None:
        if not isinstance(engine, Claiming):
            raise TypeError(f"{name}: the queue engine offers no at-least-once delivery")
        _claim_loop(engine, queue, handler, interval, batch, name, at_least_once, stop)
        log.debug("%s: stopped", name)
        return
    for items in _batches(lambda: engine.fetch_many(queue, batch), name, interval, stop):
        for i, (key, value) in enumerate(items):
            if stop.stopping:
                _put_back(engine, queue, items[i:], name)
                break
            _handle_one(handler, queue, key, value, name)
    log.debug("%s: stopped", name)


def _batches(take: Callable[[], Sequence[Any]], name: str, interval: float,
             stop: _StopFlag) -> Iterator[Sequence[Any]]:
    """The non-empty batches take() gives until the stop, sleeping `interval` after an
    empty one; an engine outage is logged once (and its end), and retried."""
    down = False
    while not stop.stopping:
        try:
            items = take()
        except EngineUnavailable as exc:
            if not down:
                log.warning("%s: %s; retrying", name, exc)
                down = True
            stop.sleep(max(interval, UNAVAILABLE_RETRY))
            continue
        if down:
            log.info("%s: the queue engine is back", name)
            down = False
        if not items:
            stop.sleep(interval)
            continue
        yield items


def _handle_one(handler: Handler, queue: str, key: str, value: str, name: str) -> bool:
    """Run the handler; False (logged) when it failed."""
    try:
        handler(key, value)
    except Exception as exc:  # a handler failure must never stop the consumer
        log.error("%s: handler failed for %s: %s: %s", name, describe_item(queue, key, value),
                  type(exc).__name__, exc)
        log.debug("%s: handler traceback", name, exc_info=True)
        return False
    return True


def _claim_loop(engine: Claiming, queue: str, handler: Handler, interval: float, batch: int,
                name: str, opts: AtLeastOnce, stop: _StopFlag) -> None:
    """At-least-once: claim a batch, handle each item, ack it (or have it retried)."""
    for claims in _batches(lambda: engine.claim(queue, batch, opts.lease), name, interval,
                           stop):
        try:
            _work_through(engine, queue, handler, name, opts, stop, claims)
        except EngineUnavailable as exc:
            # the unacknowledged items come back when their lease ends
            log.warning("%s: %s: the unacknowledged rest of the batch comes back to the "
                        "queue within %gs", name, exc, opts.lease)


def _work_through(engine: Claiming, queue: str, handler: Handler, name: str,
                  opts: AtLeastOnce, stop: _StopFlag, claims: Sequence[Claim]) -> None:
    renewed = time.monotonic()
    for i, item in enumerate(claims):
        if stop.stopping:
            engine.renew(queue, [c.token for c in claims[i:]], 0)  # back to the head now
            return
        if time.monotonic() - renewed > opts.lease / 2:  # keep the rest of the batch ours
            engine.renew(queue, [c.token for c in claims[i:]], opts.lease)
            renewed = time.monotonic()
        if opts.max_deliveries and item.claims > opts.max_deliveries:
            log.error("%s: dropped after %d deliveries: %s", name, item.claims - 1,
                      describe_item(queue, item.key, item.value))
            engine.ack(queue, [item.token])
            continue
        if _handle_one(handler, queue, item.key, item.value, name):
            if not engine.ack(queue, [item.token]):
                log.warning("%s: the lease ended before the handler did: %s may be handled "
                            "again", name, describe_item(queue, item.key, item.value))
        else:
            engine.renew(queue, [item.token], opts.retry)  # back to the head after retry


def _put_back(engine: Engine, queue: str, rest: list[tuple[str, str]], name: str) -> None:
    """Return the unhandled rest of a batch to the queue so the stop-time save keeps it."""
    for n, (key, value) in enumerate(rest):
        try:
            engine.add(queue, key, value)
        except Exception as exc:  # arena full: nothing better to do than say what is lost
            log.error("%s: %d unhandled item(s) lost at stop (%s), first: %s", name,
                      len(rest) - n, exc, describe_item(queue, key, value))
            return
