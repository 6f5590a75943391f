"""The one table of MI commands: name, aliases, recipes (parameter lists), help, module.

Every transport serves this same registry through MICore; `which` and `help` read it too.
Adding a command = one function + one `Command(...)` line in mi_server/mi/commands/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from jsonrpcserver.result import Result

from mi_server.mi.context import MIContext

Handler = Callable[[MIContext, dict[str, Any]], Result]
# A command run with its change held pending: (result value, settle) where settle(commit)
# commits or undoes the change; an error is raised as JsonRpcError with nothing held; None
# when this form does not apply to these params (the command is then staged as usual).
# See MICore.stage_checked.
# The third argument is the reply's byte limit (None: the FIFO's compiled path, which
# holds only what it can encode at once, else None); with a limit the form applies
# whatever the size and raises ReplyTooLarge, with nothing held, when the result cannot fit.
PendingHandler = Callable[[MIContext, dict[str, Any], "int | None"],
                          "tuple[Any, Callable[[bool], None]] | None"]


class ReplyTooLarge(Exception):
    """A pending form's result cannot fit the transport's reply limit; nothing is held."""


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
    # False: the command only reads state, so running it changes nothing anyone can see.
    # A transport may then run it before it knows the reply can be delivered (the FIFO
    # listener does, see MICore.stage); True (the safe default) means it must not.
    side_effects: bool = True
    # The handler's form that holds its change pending until the transport knows the reply
    # can be delivered (mq_fetch: Arena.fetch_pending); None: the command has none.
    pending: PendingHandler | None = None
    # params count -> the one non-empty recipe of that length, for positional params; counts
    # with no recipe or with several (ambiguous) are absent: match_recipe says which error
    positional: dict[int, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counts: dict[int, list[tuple[str, ...]]] = {}
        for recipe in self.recipes:
            if recipe:
                counts.setdefault(len(recipe), []).append(recipe)
        object.__setattr__(self, "positional",
                           {n: rs[0] for n, rs in counts.items() if len(rs) == 1})


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
        # the per-request lookup: the dict's own get, so a lookup costs no Python frame
        self.lookup: Callable[[str], Command | None] = self._by_name.get

    def get(self, name: str) -> Command | None:
        # Exact, case-sensitive: OpenSIPS's lookup_mi_cmd compares bytes.
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Every accepted name (aliases included), as `which` lists them."""
        return list(self._names)
