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
consumer goes on with the next item: the item is not retried.

Delivery guarantee: **at most once**. Items are removed from the queue before their handler
runs, so a consumer killed mid-handler (kill -9, the supervisor's SIGKILL after the stop
grace period) loses that item and the untouched rest of its batch (up to `batch` items).
On SIGTERM/SIGINT a consumer finishes the item in hand, puts the untouched rest of its
batch back at the tail of the queue (where the dbmode save at stop finds them; addmode and
size apply again) and returns.
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
from collections.abc import Callable
from typing import Any

from mi_server.engine.contract import Engine
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
                 name: str) -> None:
    """Drain `queue` through `handler` until SIGTERM/SIGINT. `name` is for log lines.

    While the engine is unavailable (Redis down) it says so once, retries every
    UNAVAILABLE_RETRY seconds (or `interval`, if longer), and says when it is back."""
    stop = _StopFlag()
    log.debug("%s: started", name)
    down = False
    while not stop.stopping:
        try:
            items = engine.fetch_many(queue, batch)  # config: batch >= 1
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
        for i, (key, value) in enumerate(items):
            if stop.stopping:
                _put_back(engine, queue, items[i:], name)
                break
            _handle_one(handler, queue, key, value, name)
    log.debug("%s: stopped", name)


def _handle_one(handler: Handler, queue: str, key: str, value: str, name: str) -> None:
    try:
        handler(key, value)
    except Exception as exc:  # a handler failure must never stop the consumer
        log.error("%s: handler failed for %s: %s: %s", name, describe_item(queue, key, value),
                  type(exc).__name__, exc)
        log.debug("%s: handler traceback", name, exc_info=True)


def _put_back(engine: Engine, queue: str, rest: list[tuple[str, str]], name: str) -> None:
    """Return the unhandled rest of a batch to the queue so the stop-time save keeps it."""
    for n, (key, value) in enumerate(rest):
        try:
            engine.add(queue, key, value)
        except Exception as exc:  # arena full: nothing better to do than say what is lost
            log.error("%s: %d unhandled item(s) lost at stop (%s), first: %s", name,
                      len(rest) - n, exc, describe_item(queue, key, value))
            return
