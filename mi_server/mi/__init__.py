"""The MI core: JSON-RPC bytes in, bytes out, over the one command registry.

    core = build_core(ctx)
    reply = core.handle(b'{"jsonrpc":"2.0","method":"which","id":1}')
"""

from __future__ import annotations

from mi_server.mi.context import MIContext, ProcessInfo
from mi_server.mi.core import MICore


def build_core(ctx: MIContext) -> MICore:
    """The MI core every transport serves (HTTP workers, the FIFO listener)."""
    from mi_server.mi.commands import REGISTRY

    return MICore(REGISTRY, ctx)


__all__ = ["MICore", "MIContext", "ProcessInfo", "build_core"]
