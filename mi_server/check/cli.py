"""mq-check: queue sizes as a monitoring plugin (Nagios plugin conventions, which Icinga,
Sensu, Zabbix agents and Prometheus' script exporters all run).

    mq-check --queue q --warning 100 --critical 1000
    MQUEUE OK - q size 3 | q=3;100;1000;0

One line on stdout, perfdata after `|`, exit 0 OK, 1 WARNING (a size above --warning),
2 CRITICAL (above --critical), 3 UNKNOWN (no answer in --timeout seconds, a connection
error, an unknown queue, a reply that is not MI's). Every queue when none is named. It
asks over HTTP (--url, the default), the FIFO (--fifo, --reply-dir) or a datagram socket
(--datagram udp:IP:PORT or /path), with `mq_get_sizes` / `mq_get_size`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from mi_server.check.transports import CheckFailed, datagram_call, fifo_call, http_call

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
DEFAULT_URL = "http://127.0.0.1:8888/mi"
DEFAULT_TIMEOUT = 10.0
_PLAIN_LABEL = re.compile(r"[A-Za-z0-9_.:-]+")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which a monitoring system reads as CRITICAL: a
    plugin's usage error is UNKNOWN (3), in the plugin's one-line form."""

    def error(self, message: str) -> NoReturn:
        print(f"MQUEUE UNKNOWN - {message} (see mq-check --help)")
        sys.exit(UNKNOWN)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _Parser(
        prog="mq-check", description="Check mqueue sizes over MI (Nagios plugin conventions).")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--url", default=None, help=f"MI over HTTP (default {DEFAULT_URL}); "
                     "http://user:password@host:port/mi for basic auth")
    how.add_argument("--fifo", metavar="PATH", help="MI over the server's FIFO")
    how.add_argument("--datagram", metavar="ADDR", help="MI over datagrams: udp:IP:PORT or "
                     "an AF_UNIX socket path")
    ap.add_argument("--reply-dir", default="/tmp/", metavar="DIR",
                    help="with --fifo: the server's fifo.reply_dir (default %(default)s)")
    ap.add_argument("-q", "--queue", action="append", default=[], metavar="NAME",
                    help="a queue to check (repeatable); every queue when none is named")
    ap.add_argument("-w", "--warning", type=int, default=None, metavar="N",
                    help="WARNING when a size is above N")
    ap.add_argument("-c", "--critical", type=int, default=None, metavar="N",
                    help="CRITICAL when a size is above N")
    ap.add_argument("-t", "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help="give up (UNKNOWN) after this long (default %(default)s)")
    return ap.parse_args(argv)


def _caller(args: argparse.Namespace) -> Callable[[bytes, float], bytes]:
    if args.fifo:
        return lambda body, deadline: fifo_call(args.fifo, args.reply_dir, body, deadline)
    if args.datagram:
        return lambda body, deadline: datagram_call(args.datagram, body, deadline)
    url = args.url or DEFAULT_URL
    return lambda body, deadline: http_call(url, body, deadline)


def ask(call: Callable[[bytes, float], bytes], method: str, params: list[Any],
        deadline: float) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params,
                       "id": "mq-check"}).encode()
    raw = call(body, deadline)
    try:
        reply = json.loads(raw)
    except ValueError:
        raise CheckFailed(f"not an MI reply: {raw[:60]!r}") from None
    if not isinstance(reply, dict):
        raise CheckFailed(f"not an MI reply: {raw[:60]!r}")
    if "error" in reply:
        err = reply["error"] or {}
        raise CheckFailed(f"{method}: {err.get('code')} {err.get('message')}")
    return reply.get("result")


def sizes(call: Callable[[bytes, float], bytes], queues: list[str],
          deadline: float) -> list[tuple[str, int]]:
    try:
        if not queues:
            listed = ask(call, "mq_get_sizes", [], deadline)["Queue"]
            return [(str(q["name"]), int(q["size"])) for q in reversed(listed)]
        out = []
        for name in queues:
            q = ask(call, "mq_get_size", [name], deadline)["Queue"]
            out.append((str(q["name"]), int(q["size"])))
        return out
    except (KeyError, TypeError, ValueError):
        raise CheckFailed("unexpected reply shape") from None


def _label(name: str) -> str:
    return name if _PLAIN_LABEL.fullmatch(name) else "'" + name.replace("'", "''") + "'"


def verdict(found: list[tuple[str, int]], warning: int | None,
            critical: int | None) -> tuple[int, str]:
    """The exit code and the output line for these sizes."""
    state = OK
    for _, size in found:
        if critical is not None and size > critical:
            state = CRITICAL
        elif warning is not None and size > warning and state < WARNING:
            state = WARNING
    text = ", ".join(f"{name} size {size}" for name, size in found) or "no queues"
    w = "" if warning is None else str(warning)
    c = "" if critical is None else str(critical)
    perf = " ".join(f"{_label(name)}={size};{w};{c};0" for name, size in found)
    return state, f"MQUEUE {STATE_NAMES[state]} - {text}" + (f" | {perf}" if perf else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.timeout <= 0:
        print("MQUEUE UNKNOWN - --timeout must be positive")
        return UNKNOWN

    def alarm(*_: Any) -> None:  # a last resort: whatever blocks, the plugin answers
        raise CheckFailed(f"timed out after {args.timeout:g} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout + 0.5)
    deadline = time.monotonic() + args.timeout
    try:
        found = sizes(_caller(args), args.queue, deadline)
        state, line = verdict(found, args.warning, args.critical)
    except CheckFailed as exc:
        state, line = UNKNOWN, f"MQUEUE UNKNOWN - {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(line)
    sys.stdout.flush()
    return state


if __name__ == "__main__":
    sys.exit(main())
