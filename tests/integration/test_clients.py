"""Other real clients against a real server: the `opensips` package (HTTP, FIFO, UDP
datagram; its unix datagram socket in tests/datagram), curl, a plain shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from opensips.mi import OpenSIPSMI, OpenSIPSMIException

from tests.fifo.fifoserver import shell_client


def mi_client(server, transport: str) -> OpenSIPSMI:
    if transport == "http":
        return OpenSIPSMI("http", url=server.url)
    if transport == "datagram":
        host, _, port = server.datagram[len("udp:"):].rpartition(":")
        return OpenSIPSMI("datagram", datagram_ip=host, datagram_port=port,
                          datagram_timeout=5)
    return OpenSIPSMI(
        "fifo",
        fifo_file=str(server.fifo_path),
        fifo_file_fallback=str(server.fifo_path),
        fifo_reply_dir=str(server.reply_dir),
    )


@pytest.mark.parametrize("transport", ["http", "fifo", "datagram"])
def test_opensips_package_execute_returns_results(server, transport):
    mi = mi_client(server, transport)
    assert mi.execute("mq_add", {"name": "py_q", "key": "k", "value": "v é"}) == "OK"
    assert mi.execute("mq_get_size", ["py_q"]) == {"Queue": {"name": "py_q", "size": 1}}
    assert mi.execute("mq_fetch", {"name": "py_q"}) == {"Item": {"key": "k", "value": "v é"}}


@pytest.mark.parametrize("transport", ["http", "fifo", "datagram"])
@pytest.mark.parametrize(
    "cmd, params, text",
    [
        ("mq_get_size", ["nosuch"], "404: No such queue"),
        ("mq_fetch", {"name": "py_q", "limit": "x"},
         "-32602: Invalid params (Bad type for parameter 'limit')"),
        ("no_such_command", {}, "-32601: Method not found"),
    ],
)
def test_opensips_package_raises_on_mi_errors(server, transport, cmd, params, text):
    with pytest.raises(OpenSIPSMIException) as err:
        mi_client(server, transport).execute(cmd, params)
    assert str(err.value) == f"Error executing command: {text}"


@pytest.mark.parametrize("content_type", [["-H", "Content-Type: application/json"], []])
def test_curl_with_and_without_json_content_type(server, content_type):
    assert shutil.which("curl"), "curl is needed for this test (apt-get install curl)"
    body = '{"jsonrpc":"2.0","method":"mq_get_size","params":["curl_q"],"id":7}'
    run = subprocess.run(
        ["curl", "-s", "-w", "\\n%{http_code}", *content_type, "-d", body, server.url],
        capture_output=True, text=True, timeout=10,
    )
    reply, status = run.stdout.rsplit("\n", 1)
    assert status == "200"
    assert reply == '{"jsonrpc":"2.0","result":{"Queue":{"name":"curl_q","size":0}},"id":7}'


def shell_request(server, name: str, request: str) -> str:
    return shell_client(server.fifo_path, server.reply_dir, name, request).decode()


def test_plain_shell_fifo_client_gets_the_exact_reply(server):
    server.request("mq_add", ["sh_q", "key \"q\"", "tab\there"])
    out = shell_request(server, "shell_reply_1",
                        '{"jsonrpc":"2.0","method":"mq_fetch","params":{"name":"sh_q"},"id":"x"}')
    assert out == ('{"jsonrpc":"2.0","result":{"Item":{"key":"key \\"q\\"",'
                   '"value":"tab\\there"}},"id":"x"}')


def test_eight_concurrent_shell_clients_each_get_their_own_reply(server):
    for i in range(8):
        server.request("mq_add", ["conc_q", f"k{i}", f"v{i}"])

    def one(i: int) -> dict:
        out = shell_request(
            server, f"conc_reply_{i}",
            json.dumps({"jsonrpc": "2.0", "method": "mq_fetch",
                        "params": ["conc_q"], "id": i}))
        return json.loads(out)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(one, range(8)))
    assert [r["id"] for r in replies] == list(range(8))
    keys = sorted(r["result"]["Item"]["key"] for r in replies)
    assert keys == [f"k{i}" for i in range(8)]
    assert server.request("mq_get_size", ["conc_q"])["result"]["Queue"]["size"] == 0


def test_a_local_producer_attaches_to_the_servers_arena_by_the_logged_name(server):
    import re
    import sys

    name = re.search(r"in arena ([^ ,]+)", server.stderr()).group(1)
    producer = (
        "import sys\n"
        "from mi_server.engine import Arena\n"
        "arena = Arena.attach(sys.argv[1])\n"
        "ok = [arena.mq_add('conc_q', f'p{i}', 'from a producer') for i in range(3)]\n"
        "print(ok, arena.mq_add('no_such_queue', 'k', 'v'))\n"
    )
    run = subprocess.run([sys.executable, "-c", producer, name], capture_output=True,
                         text=True, timeout=20, env={**os.environ, "PYTHONPATH": "."})
    assert run.stdout.strip() == "[True, True, True] False", run.stderr
    items = server.mi("mq_fetch", {"name": "conc_q", "limit": 10})
    assert [i["key"] for i in items] == ["p0", "p1", "p2"]
