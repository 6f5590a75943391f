"""Generic commands whose results depend on the context: kill, ps, arg, uptime, pwd, version;
and the registry rule that every command answers with a non-null result."""

from __future__ import annotations

import json
import os
import time

import pytest

from mi_server.engine import QueueSpec
from mi_server.mi import ProcessInfo
from mi_server.mi.commands import REGISTRY
from tests.mi.arena_core import arena_core


def call(core, method, params=None, id_=1):
    req = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        req["params"] = params
    return json.loads(core.handle(json.dumps(req).encode()))


def test_kill_answers_ok_and_asks_the_supervisor_to_stop():
    stops = []
    with arena_core(stop=lambda: stops.append(1)) as (core, _):
        assert call(core, "kill") == {"jsonrpc": "2.0", "result": "OK", "id": 1}
    assert stops == [1]


def test_ps_lists_the_supervisors_processes():
    procs = [ProcessInfo(0, 11, "attendant"), ProcessInfo(1, 12, "HTTPD 127.0.0.1:8888")]
    with arena_core(processes=lambda: procs) as (core, _):
        assert call(core, "ps")["result"] == {
            "Processes": [
                {"ID": 0, "PID": 11, "Type": "attendant"},
                {"ID": 1, "PID": 12, "Type": "HTTPD 127.0.0.1:8888"},
            ]
        }


def test_arg_is_the_startup_arguments():
    with arena_core(argv=["mi-server", "-c", "/etc/mq.yaml"]) as (core, _):
        assert call(core, "arg")["result"] == ["mi-server", "-c", "/etc/mq.yaml"]


def test_uptime_counts_whole_seconds_since_start():
    started = time.time() - 100
    with arena_core(started=started) as (core, _):
        result = call(core, "uptime")["result"]
    assert list(result) == ["Now", "Up since", "Up time"]
    assert result["Up since"] == time.ctime(started)
    seconds = int(result["Up time"].removesuffix(" [sec]"))
    assert 100 <= seconds <= 200


def test_pwd_is_the_working_directory():
    with arena_core() as (core, _):
        assert call(core, "pwd")["result"] == {"WD": os.getcwd()}


def test_version_names_this_server():
    with arena_core() as (core, _):
        server = call(core, "version")["result"]["Server"]
    assert server.startswith("mqueue-mi (0.1.0 (") and server.endswith("))")


def test_which_with_each_name_returns_its_recipes():
    with arena_core() as (core, _):
        for name in REGISTRY.names():
            recipes = call(core, "which", [name])["result"]
            assert recipes == [list(r) for r in REGISTRY.get(name).recipes]


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_command_has_help_and_module(name):
    with arena_core() as (core, _):
        result = call(core, "help", {"mi_cmd": name})["result"]
    assert result["Help"]
    assert result["Exported by"] in ("core", "statistics", "status_report", "mqueue")


NO_PARAM_CALLS = [
    (name, []) for name in REGISTRY.names() if () in REGISTRY.get(name).recipes and name != "kill"
]


@pytest.mark.parametrize(("name", "params"), NO_PARAM_CALLS)
def test_every_command_result_is_never_null(name, params):
    # opensips-cli exits 255 on a null result.
    with arena_core([QueueSpec("q")]) as (core, _):
        reply = call(core, name, params)
    assert reply.get("result") is not None, reply


def test_command_exception_is_server_error_not_internal_error(monkeypatch):
    def boom(*_):
        raise RuntimeError("bug")

    with arena_core([QueueSpec("q")]) as (core, arena):
        monkeypatch.setattr(arena, "size", boom)
        reply = core.handle(b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q"],"id":1}')
    assert reply == (
        b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"Server error",'
        b'"data":"Command handler returned null"},"id":1}'
    )


def test_arena_full_is_500_out_of_memory():
    with arena_core([QueueSpec("q")], size=64 * 1024) as (core, _):
        big = "x" * 4000
        replies = [
            core.handle(json.dumps(
                {"jsonrpc": "2.0", "method": "mq_add", "params": ["q", str(i), big], "id": i}
            ).encode())
            for i in range(100)
        ]
    assert replies[0] == b'{"jsonrpc":"2.0","result":"OK","id":0}'
    assert b'{"jsonrpc":"2.0","error":{"code":500,"message":"Out of memory"},"id":99}' in replies
