"""Logging for the whole server: one root configuration, set up once by the supervisor.

Children are forked after this runs, so they inherit the handler and write to the same
place. The target is stderr by default; `log_target: syslog` sends records to the local syslog
daemon, or, when there is no syslog socket to send them to, to stderr with a warning that
says so (never into the void).
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys

from mi_server import SERVER_NAME

STDERR_FORMAT = "%(asctime)s " + SERVER_NAME + "[%(process)d] %(levelname)s: %(message)s"
# syslog adds its own timestamp and host; the tag carries the name and pid like OpenSIPS.
SYSLOG_FORMAT = SERVER_NAME + "[%(process)d]: %(levelname)s: %(message)s"
SYSLOG_SOCKETS = ("/dev/log", "/var/run/syslog")


def _unreachable(path: str) -> str | None:
    """Why nothing takes syslog messages at the unix socket `path`, or None.  (The
    stdlib's SysLogHandler keeps quiet about it and drops every line.)"""
    error: OSError | None = None
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # syslogd's, then journald-style
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.connect(path)
            return None
        except OSError as exc:
            error = error or exc
    assert error is not None
    return f"{path}: {error.strerror or error}"


def _syslog_handler() -> tuple[logging.Handler | None, str]:
    """A handler on the local syslog socket, or None and why there is none.  (No UDP to
    localhost:514 as a last resort: with no daemon there every line would be lost.)"""
    reasons = []
    for path in SYSLOG_SOCKETS:
        why = _unreachable(path)
        if why is None:
            return logging.handlers.SysLogHandler(
                address=path, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            ), ""
        reasons.append(why)
    return None, "; ".join(reasons)


def syslog_missing() -> str | None:
    """Why `log_target: syslog` would fall back to stderr here, or None (for --check)."""
    handler, why = _syslog_handler()
    if handler is None:
        return why
    handler.close()
    return None


def setup_logging(level: str = "info", target: str = "stderr") -> None:
    """Configure the root logger; replaces any handler set up before (tests, re-runs).
    `syslog` with no usable syslog socket logs to stderr instead, and says so there."""
    handler: logging.Handler | None = None
    fallback = ""
    if target == "syslog":
        handler, fallback = _syslog_handler()
        if handler is not None:
            handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    if fallback:
        logging.getLogger(__name__).warning(
            "log_target syslog: no syslog socket to log to (%s): logging to stderr instead",
            fallback)
