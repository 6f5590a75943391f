"""The registry table: one line per MI command (name, handler, recipes, help, module).

Order is OpenSIPS 3.6's registration order, as its `which` lists it (measured on 3.6.8):
the statistics commands, then the core's (uptime ... kill, help), then the modules';
`which` lists names in this order, each command's aliases right after it.
`side_effects=False` marks the commands that only read (see registry.Command); a command
that changes anything keeps the default.
"""

from __future__ import annotations

from mi_server.mi.commands import core, mqueue, statistics, status
from mi_server.mi.registry import Command, Registry

NONE: tuple[str, ...] = ()

COMMANDS = (
    Command("get_statistics", statistics.get_statistics, (("statistics",),),
            "prints the statistics (all, group or one) realtime values.", "statistics",
            side_effects=False),
    Command("list_statistics", statistics.list_statistics, (NONE, ("statistics",)),
            "lists all the registered statistics and their types", "statistics",
            side_effects=False),
    Command("reset_statistics", statistics.reset_statistics, (("statistics",),),
            "resets the value of a statistic variable", "statistics"),
    Command("reset_all_statistics", statistics.reset_all_statistics, (NONE,),
            "resets the value of all resetable variables", "statistics"),
    Command("uptime", core.uptime, (NONE,),
            "prints various time information about OpenSIPS - when it started to run, "
            "for how long it runs", "core", side_effects=False),
    Command("version", core.version, (NONE, ("revision",)),
            "prints the version string of a running OpenSIPS", "core", side_effects=False),
    Command("pwd", core.pwd, (NONE,), "prints the working directory of OpenSIPS", "core",
            side_effects=False),
    Command("arg", core.arg, (NONE,), "returns the full list of arguments used at startup",
            "core", side_effects=False),
    Command("which", core.which, (NONE, ("command",)), "lists all available MI commands",
            "core", side_effects=False),
    Command("ps", core.ps, (NONE,), "lists all processes used by OpenSIPS", "core",
            side_effects=False),
    Command("kill", core.kill, (NONE,), "terminates OpenSIPS", "core"),
    Command("help", core.help, (NONE, ("mi_cmd",)),
            "prints information about MI commands usage", "core", side_effects=False),
    Command("sr_get_status", status.sr_get_status, (("group",), ("group", "identifier")),
            status.HELP_GET, "status_report", side_effects=False),
    Command("sr_list_status", status.sr_list_status, (NONE, ("group",)), status.HELP_STATUS,
            "status_report", side_effects=False),
    Command("sr_list_reports", status.sr_list_reports,
            (NONE, ("group",), ("group", "identifier")), status.HELP_REPORTS, "status_report",
            side_effects=False),
    Command("sr_list_identifiers", status.sr_list_identifiers, (NONE, ("group",)),
            status.HELP_IDENTIFIERS, "status_report", side_effects=False),
    Command("mq_get_sizes", mqueue.mq_get_sizes, (NONE,), mqueue.HELP_GET_SIZES, "mqueue",
            aliases=("mqueue:get_sizes",), side_effects=False),
    Command("mq_get_size", mqueue.mq_get_size, (("name",),), mqueue.HELP_GET_SIZE, "mqueue",
            aliases=("mqueue:get_size",), side_effects=False),
    Command("mq_fetch", mqueue.mq_fetch, (("name",), ("name", "limit")), mqueue.HELP_FETCH,
            "mqueue", aliases=("mqueue:fetch",), pending=mqueue.mq_fetch_pending),
    Command("mq_add", mqueue.mq_add, (("name", "key", "value"),), mqueue.HELP_ADD, "mqueue"),
)

REGISTRY = Registry(COMMANDS)
