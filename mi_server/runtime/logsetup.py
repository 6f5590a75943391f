"""Logging for the whole server: one root configuration, set up once by the supervisor.

Children are forked after this runs, so they inherit the handler and write to the same
place. The target is stderr by default; `log_target: syslog` sends records to the local syslog
daemon.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from mi_server import SERVER_NAME

STDERR_FORMAT = "%(asctime)s " + SERVER_NAME + "[%(process)d] %(levelname)s: %(message)s"
# syslog adds its own timestamp and host; the tag carries the name and pid like OpenSIPS.
SYSLOG_FORMAT = SERVER_NAME + "[%(process)d]: %(levelname)s: %(message)s"
SYSLOG_SOCKETS = ("/dev/log", "/var/run/syslog")


def _syslog_handler() -> logging.Handler:
    """The local syslog socket when there is one, else UDP to localhost:514."""
    for path in SYSLOG_SOCKETS:
        if os.path.exists(path):
            return logging.handlers.SysLogHandler(
                address=path, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
    return logging.handlers.SysLogHandler(facility=logging.handlers.SysLogHandler.LOG_DAEMON)


def setup_logging(level: str = "info", target: str = "stderr") -> None:
    """Configure the root logger; replaces any handler set up before (tests, re-runs)."""
    if target == "syslog":
        handler = _syslog_handler()
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
