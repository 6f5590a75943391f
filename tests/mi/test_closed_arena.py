"""MI over a closed arena: a request still running in a process of a server that died,
while another server adopts its arena, is answered 500 "Queue engine unavailable" (not
acknowledged, no traceback logged)."""

from __future__ import annotations

import json
import logging

from mi_server.engine import Arena, ArenaClosed, QueueSpec
from mi_server.engine.errors import EngineUnavailable
from mi_server.mi import build_core
from mi_server.mi.context import MIContext
from tests.engine.conftest import unique_name


def test_every_command_on_a_closed_arena_answers_engine_unavailable(caplog) -> None:
    arena = Arena.create(unique_name(), 1 << 20, [QueueSpec("q")])
    try:
        core = build_core(MIContext(engine=arena, started=0.0, argv=[], processes=list,
                                    stop=lambda: None))
        arena.add("q", "k", "v")
        arena.mark_closed()
        assert issubclass(ArenaClosed, EngineUnavailable)
        with caplog.at_level(logging.ERROR):
            for method, params in [("mq_add", ["q", "k", "v"]), ("mq_fetch", ["q"]),
                                   ("mq_get_size", ["q"]), ("mq_get_sizes", [])]:
                body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1,
                                   "params": params}).encode()
                reply = json.loads(core.handle(body))
                assert reply["error"] == {"code": 500,
                                          "message": "Queue engine unavailable"}, method
        assert "Traceback" not in caplog.text
    finally:
        arena.unlink()
        arena.close()
