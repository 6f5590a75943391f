"""The one table of MI commands: name, aliases, recipes (parameter lists), help, module.

Every transport serves this same registry through MICore; `which` and `help` read it too.
Adding a command = one function + one `Command(...)` line in mi_server/mi/commands/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jsonrpcserver.result import Result

from mi_server.mi.context import MIContext

Handler = Callable[[MIContext, dict[str, Any]], Result]


@dataclass(frozen=True)
class Command:
    """One MI command. `recipes` are the accepted parameter lists, in OpenSIPS's order; the
    handler gets the matched recipe's names as the keys of its params dict, so a command
    with several recipes tells them apart by which names are present."""

    name: str
    handler: Handler
    recipes: tuple[tuple[str, ...], ...]
    help: str
    module: str
    aliases: tuple[str, ...] = ()


class Registry:
    """Commands by every accepted name, plus the `which` listing in registration order."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self._by_name: dict[str, Command] = {}
        self._names: list[str] = []
        for cmd in commands:
            for name in (cmd.name, *cmd.aliases):
                if name in self._by_name:
                    raise ValueError(f"MI command registered twice: {name!r}")
                self._by_name[name] = cmd
                self._names.append(name)

    def get(self, name: str) -> Command | None:
        # Exact, case-sensitive: OpenSIPS's lookup_mi_cmd compares bytes.
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Every accepted name (aliases included), as `which` lists them."""
        return list(self._names)
