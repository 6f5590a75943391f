"""The real opensips-cli (PyPI opensipscli 0.4.1) against a real server, over HTTP, FIFO
and datagram (UDP with datagram_ip/datagram_port, and a unix socket with the `opensips`
package's datagram_unix_socket, which opensips-cli hands through from `-o`).

Each case runs the client as a subprocess and asserts its stdout (json.dumps(result,
indent=4)) and exit code, exactly as a user sees them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

OPENSIPS_CLI = str(Path(sys.executable).with_name("opensips-cli"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(server, transport: str, *args: str) -> subprocess.CompletedProcess:
    if transport == "http":
        opts = ["-o", "communication_type=http", "-o", f"url={server.url}"]
    elif transport == "datagram":
        host, _, port = server.datagram[len("udp:"):].rpartition(":")
        opts = ["-o", "communication_type=datagram", "-o", f"datagram_ip={host}",
                "-o", f"datagram_port={port}"]
    elif transport == "datagram_unix":
        opts = ["-o", "communication_type=datagram",
                "-o", f"datagram_unix_socket={server.datagram}"]
    else:
        opts = [
            "-o", "communication_type=fifo",
            "-o", f"fifo_file={server.fifo_path}",
            "-o", f"fifo_reply_dir={server.reply_dir}",
        ]
    return subprocess.run(
        [OPENSIPS_CLI, *opts, "-x", "mi", *args],
        capture_output=True, text=True, timeout=30,
    )


def pretty(result) -> str:
    return json.dumps(result, indent=4) + "\n"


TRANSPORTS = ["http", "fifo", "datagram", "datagram_unix"]


@pytest.fixture(scope="module")
def unix_datagram_server():
    """The same queues on a server whose datagram socket is a unix socket."""
    import shutil
    import tempfile

    from tests.integration.conftest import QUEUES
    from tests.serverproc import Server, free_port

    workdir = Path(tempfile.mkdtemp(prefix="mqiu", dir="/tmp"))
    srv = Server(workdir, free_port(), queues=QUEUES,
                 extra={"datagram": {"socket": str(workdir / "mi.sock")}})
    srv.datagram = str(workdir / "mi.sock")  # type: ignore[attr-defined]
    srv.start()
    yield srv
    rc = srv.stop()
    log = srv.stderr()
    srv.kill()
    shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, log


@pytest.fixture
def server(server, transport, request):
    """The module's server; for datagram_unix, the one with the unix datagram socket."""
    if transport == "datagram_unix":
        return request.getfixturevalue("unix_datagram_server")
    return server


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mq_get_sizes_lists_every_queue_in_reverse_definition_order(server, transport):
    run = cli(server, transport, "mq_get_sizes")
    assert run.returncode == 0, run.stderr
    names = [q["name"] for q in json.loads(run.stdout)["Queue"]]
    assert names == ["conc_q", "sh_q", "py_q", "curl_q", "cli_keep",
                     "cli_empty", "cli_named", "cli_limit", "cli_q"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mq_get_size_and_fetch_one_item(server, transport):
    q = "cli_q"
    for i in range(2):
        server.request("mq_add", {"name": q, "key": f"{transport}k{i}", "value": f"v{i}"})
    run = cli(server, transport, "mq_get_size", q)
    assert (run.returncode, run.stdout) == (0, pretty({"Queue": {"name": q, "size": 2}}))
    run = cli(server, transport, "mq_fetch", q)
    assert (run.returncode, run.stdout) == (
        0, pretty({"Item": {"key": f"{transport}k0", "value": "v0"}}))
    run = cli(server, transport, "mq_fetch", q)
    assert run.returncode == 0 and json.loads(run.stdout)["Item"]["key"] == f"{transport}k1"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mq_fetch_with_positional_limit_given_as_string(server, transport):
    q = "cli_limit"
    for i in range(7):
        server.request("mq_add", [q, f"k{i}", f"v{i}"])
    run = cli(server, transport, "mq_fetch", q, "5")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [{"key": f"k{i}", "value": f"v{i}"} for i in range(5)]
    run = cli(server, transport, "mq_fetch", q, "5")
    assert json.loads(run.stdout) == [{"key": f"k{i}", "value": f"v{i}"} for i in (5, 6)]
    run = cli(server, transport, "mq_fetch", q, "5")
    assert (run.returncode, run.stdout) == (0, pretty([]))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mq_fetch_with_named_params(server, transport):
    q = "cli_named"
    server.request("mq_add", [q, "a", "1"])
    server.request("mq_add", [q, "b", "2"])
    run = cli(server, transport, "mq_fetch", f"name={q}", "limit=5")
    assert (run.returncode, run.stdout) == (
        0, pretty([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "args, message",
    [
        (("mq_get_size", "nosuch"), "404: No such queue"),
        (("mq_fetch", "nosuch"), "404: No such queue"),
        (("mq_fetch", "cli_empty"), "404: Empty queue"),
        (("mq_fetch", "cli_empty", "0"), "-32602: Invalid params (Bad type for parameter 'limit')"),
        (("mq_get_size",), "-32602: Invalid params (Too few or too many parameters)"),
    ],
)
def test_errors_exit_255_with_the_mi_error(server, transport, args, message):
    run = cli(server, transport, *args)
    assert run.returncode == 255
    assert run.stdout == ""
    expected = f"ERROR: command '{args[0]}' returned: Error executing command: {message}\n"
    assert ANSI.sub("", run.stderr) == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_which_lists_the_commands_and_aliases(server, transport):
    run = cli(server, transport, "which")
    assert run.returncode == 0, run.stderr
    names = json.loads(run.stdout)
    for name in ("mq_get_size", "mq_fetch", "mq_get_sizes", "mq_add", "which",
                 "mqueue:get_size", "mqueue:fetch", "mqueue:get_sizes"):
        assert name in names


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_which_with_a_command_returns_its_parameter_lists(server, transport):
    run = cli(server, transport, "which", "mq_fetch")
    assert (run.returncode, run.stdout) == (0, pretty([["name"], ["name", "limit"]]))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_addmode_2_queue_keeps_the_newest_per_key(server, transport):
    q = "cli_keep"
    for k, v in [("a", "1"), ("b", "2"), ("a", "3")]:
        server.request("mq_add", [q, k, v])
    run = cli(server, transport, "mq_fetch", q, "10")
    assert json.loads(run.stdout) == [{"key": "b", "value": "2"}, {"key": "a", "value": "3"}]
