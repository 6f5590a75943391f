"""OpenSIPS 3.6 core MI commands (mi/mi_core.c, mi/mi.c): which, help, version, uptime, pwd,
arg, ps, kill — same names, recipes and result shapes."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

from jsonrpcserver.result import Error, Result

import mi_server
from mi_server.mi.context import MIContext
from mi_server.mi.params import get_str
from mi_server.mi.results import success

UNKNOWN_COMMAND = (404, "unknown MI command")
HELP_USAGE = "Usage: help mi_cmd - returns information about 'mi_cmd'"


def _registry():
    # The registry lists these very functions; imported late to avoid an import cycle.
    from mi_server.mi.commands import REGISTRY

    return REGISTRY


def which(ctx: MIContext, params: dict[str, Any]) -> Result:
    """[] → every accepted name; [command] → that command's recipes."""
    if "command" not in params:
        return success(_registry().names())
    cmd = _registry().get(get_str(params, "command"))
    if cmd is None:
        return Error(*UNKNOWN_COMMAND)
    return success([list(recipe) for recipe in cmd.recipes])


def help(ctx: MIContext, params: dict[str, Any]) -> Result:
    """[] → the usage line (OpenSIPS's w_mi_help); [mi_cmd] → its help and module."""
    if "mi_cmd" not in params:
        return success(HELP_USAGE)
    cmd = _registry().get(get_str(params, "mi_cmd"))
    if cmd is None:
        return Error(*UNKNOWN_COMMAND)
    return success({"Help": cmd.help, "Exported by": cmd.module})


def server_string() -> str:
    """Like OpenSIPS's SERVER_HDR minus "Server: ": NAME (VERSION (ARCH/OS))."""
    arch = platform.machine() or "unknown"
    return f"{mi_server.SERVER_NAME} ({mi_server.__version__} ({arch}/{sys.platform}))"


def version(ctx: MIContext, params: dict[str, Any]) -> Result:
    """[] -> the server string; [revision] -> it and the build's source revision, which
    OpenSIPS built without git metadata prints as "unknown": "unknown" (measured on 3.6.8;
    the parameter's value is not read), as ours does."""
    if "revision" in params:
        return success({"Server": server_string(), "unknown": "unknown"})
    return success({"Server": server_string()})


def _ctime(t: float) -> str:
    # ctime(3) text without its newline, in local time like OpenSIPS.
    return time.ctime(t)


def uptime(ctx: MIContext, params: dict[str, Any]) -> Result:
    now = time.time()
    return success(
        {
            "Now": _ctime(now),
            "Up since": _ctime(ctx.started),
            # difftime of two time_t values: whole seconds.
            "Up time": f"{max(0, int(now) - int(ctx.started))} [sec]",
        }
    )


def pwd(ctx: MIContext, params: dict[str, Any]) -> Result:
    return success({"WD": os.getcwd()})


def arg(ctx: MIContext, params: dict[str, Any]) -> Result:
    return success(list(ctx.argv))


def ps(ctx: MIContext, params: dict[str, Any]) -> Result:
    return success(
        {"Processes": [{"ID": p.id, "PID": p.pid, "Type": p.type} for p in ctx.processes()]}
    )


def kill(ctx: MIContext, params: dict[str, Any]) -> Result:
    # OpenSIPS sends SIGTERM to its process group and answers "OK"; ours asks the
    # supervisor, which stops everything in order (the reply is still sent first).
    ctx.stop()
    return success("OK")
