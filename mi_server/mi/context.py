"""What MI commands may touch: the engine plus a few facts about the running server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine is imported lazily so the MI core loads without it
    from mi_server.engine.contract import Engine
    from mi_server.runtime.statusboard import Group


@dataclass
class ProcessInfo:
    """One line of `ps`: OpenSIPS's process table entry."""

    id: int
    pid: int
    type: str


def _no_processes() -> list[ProcessInfo]:
    return []


def _no_stop() -> None:
    return None


def _serving() -> list[Group]:
    from mi_server.runtime.statusboard import initial_board

    return initial_board()


@dataclass
class MIContext:
    """Everything a command needs; built once per serving process by the runtime."""

    engine: Engine | Any  # any backend (engine/contract.py); Any: tests' stand-ins
    started: float  # time.time() at server start
    argv: list[str] = field(default_factory=list)
    processes: Callable[[], list[ProcessInfo]] = _no_processes  # for `ps`
    stop: Callable[[], None] = _no_stop  # for `kill`: asks the supervisor to stop
    # the status report (sr_* commands, GET /health): the supervisor's board as last written
    status: Callable[[], list[Group]] = _serving
