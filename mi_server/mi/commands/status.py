"""OpenSIPS 3.3+ status report MI commands (status_report.c): sr_get_status,
sr_list_status, sr_list_reports, sr_list_identifiers — same recipes, shapes and errors.

They read the board that the supervisor keeps (mi_server/runtime/statusboard.py) through
ctx.status, so every process answers the same. Group and identifier names match
case-insensitively, as in OpenSIPS; identifier "all" in sr_get_status aggregates the group.
"""

from __future__ import annotations

import time
from typing import Any

from jsonrpcserver.result import Error, Result

from mi_server.mi.context import MIContext
from mi_server.mi.params import get_str
from mi_server.mi.results import success
from mi_server.runtime.statusboard import MAIN, SR_NOT_READY, SR_READY, Group, Identifier

GROUP_NOT_FOUND = (404, "Group not found")
IDENTITY_NOT_FOUND = (404, "Identity not found")  # sr_get_status's wording
IDENTIFIER_NOT_FOUND = (404, "Identifier not found")  # sr_list_reports's

HELP_GET = "gets the status (only) of a 'status-report' group/identifier"
HELP_STATUS = ("list the status of all the identifiers in OpenSIPS or from a certain "
               "'status-report' group")
HELP_REPORTS = "list the reports produced by some 'status-report' identifiers / groups"
HELP_IDENTIFIERS = "list the identifiers from a group or all"


def _group(groups: list[Group], name: str) -> Group | None:
    folded = name.lower()
    return next((g for g in groups if g.name.lower() == folded), None)


def _identifier(group: Group, name: str) -> Identifier | None:
    folded = name.lower()
    return next((i for i in group.identifiers if i.name.lower() == folded), None)


def _status(ident: Identifier, named: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": ident.name} if named else {}
    out["Readiness"] = ident.status > 0
    out["Status"] = ident.status
    if ident.details is not None:
        out["Details"] = ident.details
    return out


def _reports(ident: Identifier) -> list[dict[str, Any]]:
    # ctime without its newline, as OpenSIPS prints the date
    return [{"Timestamp": ts, "Date": time.ctime(ts), "Log": log} for ts, log in ident.reports]


def sr_get_status(ctx: MIContext, params: dict[str, Any]) -> Result:
    group = _group(ctx.status(), get_str(params, "group"))
    if group is None:
        return Error(*GROUP_NOT_FOUND)
    name = get_str(params, "identifier") if "identifier" in params else MAIN
    if name.lower() == "all":
        status = SR_NOT_READY if any(i.status < 0 for i in group.identifiers) else SR_READY
        return success({"Readiness": status > 0, "Status": status, "Details": "aggregated"})
    ident = _identifier(group, name)
    if ident is None:
        return Error(*IDENTITY_NOT_FOUND)
    return success(_status(ident, named=False))


def sr_list_status(ctx: MIContext, params: dict[str, Any]) -> Result:
    groups = ctx.status()
    if "group" in params:
        group = _group(groups, get_str(params, "group"))
        if group is None:
            return Error(*GROUP_NOT_FOUND)
        return success([_status(i, named=True) for i in group.identifiers])
    return success([{"Name": g.name, "Identifiers": [_status(i, named=True)
                                                      for i in g.identifiers]}
                    for g in groups])


def sr_list_reports(ctx: MIContext, params: dict[str, Any]) -> Result:
    groups = ctx.status()
    if "group" not in params:
        return success([{"Name": g.name, "Identifiers": [
            {"Name": i.name, "Reports": _reports(i)} for i in g.identifiers]} for g in groups])
    group = _group(groups, get_str(params, "group"))
    if group is None:
        return Error(*GROUP_NOT_FOUND)
    if "identifier" in params:
        ident = _identifier(group, get_str(params, "identifier"))
        if ident is None:
            return Error(*IDENTIFIER_NOT_FOUND)
        return success(_reports(ident))
    return success([{"Name": i.name, "Reports": _reports(i)} for i in group.identifiers])


def sr_list_identifiers(ctx: MIContext, params: dict[str, Any]) -> Result:
    groups = ctx.status()
    if "group" in params:
        group = _group(groups, get_str(params, "group"))
        if group is None:
            return Error(*GROUP_NOT_FOUND)
        return success({"Group": group.name, "Identifiers": [i.name for i in group.identifiers]})
    return success([{"Group": g.name, "Identifiers": [i.name for i in g.identifiers]}
                    for g in groups])
