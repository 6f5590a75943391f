"""The `opensips` package (what Python probes use) over a unix datagram socket: it binds
/tmp/opensips_mi_reply_* and the server replies to that address."""

from __future__ import annotations

import glob

import pytest
from opensips.mi import OpenSIPSMI, OpenSIPSMIException


@pytest.fixture(scope="module")
def unix_server():
    import shutil
    import tempfile
    from pathlib import Path

    from tests.datagram.conftest import datagram_server

    workdir = Path(tempfile.mkdtemp(prefix="mqdp", dir="/tmp"))
    srv = datagram_server("unix", ["name=py_q", "name=other"], workdir).start()
    yield srv
    rc = srv.stop()
    log = srv.stderr()
    srv.kill()
    shutil.rmtree(workdir, ignore_errors=True)
    assert rc == 0, log


def client(srv) -> OpenSIPSMI:
    # opensips-cli passes its datagram_buffer_size (65535); the package alone reads 32768
    return OpenSIPSMI("datagram", datagram_unix_socket=srv.datagram, datagram_timeout=5,
                      datagram_buffer_size=65535)


def test_execute_returns_results(unix_server):
    mi = client(unix_server)
    assert mi.execute("mq_add", {"name": "py_q", "key": "k", "value": "v é"}) == "OK"
    assert mi.execute("mq_get_size", ["py_q"]) == {"Queue": {"name": "py_q", "size": 1}}
    assert mi.execute("mq_fetch", {"name": "py_q"}) == {"Item": {"key": "k", "value": "v é"}}
    assert mi.execute("mq_get_sizes", {}) == {
        "Queue": [{"name": "other", "size": 0}, {"name": "py_q", "size": 0}]}
    assert "mq_fetch" in mi.execute("which", {})


@pytest.mark.parametrize(
    "cmd, params, text",
    [
        ("mq_get_size", ["nosuch"], "404: No such queue"),
        ("mq_fetch", ["py_q"], "404: Empty queue"),
        ("mq_fetch", {"name": "py_q", "limit": "x"},
         "-32602: Invalid params (Bad type for parameter 'limit')"),
        ("no_such_command", {}, "-32601: Method not found"),
    ],
)
def test_mi_errors_raise(unix_server, cmd, params, text):
    with pytest.raises(OpenSIPSMIException) as err:
        client(unix_server).execute(cmd, params)
    assert str(err.value) == f"Error executing command: {text}"


def test_a_reply_over_the_buffer_is_an_exception_and_keeps_the_items(unix_server):
    mi = client(unix_server)
    for i in range(3):
        assert mi.execute("mq_add", ["py_q", f"k{i}", "x" * 30000]) == "OK"
    with pytest.raises(OpenSIPSMIException, match="could not decode json: .*500 Internal error"):
        mi.execute("mq_fetch", ["py_q", "3"])
    assert mi.execute("mq_get_size", ["py_q"])["Queue"]["size"] == 3
    assert [i["key"] for i in mi.execute("mq_fetch", ["py_q", "2"])] == ["k0", "k1"]
    assert [i["key"] for i in mi.execute("mq_fetch", ["py_q", "1"])] == ["k2"]


def test_the_package_s_reply_sockets_are_gone_afterwards(unix_server):
    before = set(glob.glob("/tmp/opensips_mi_reply_*"))
    client(unix_server).execute("mq_get_size", ["py_q"])
    assert set(glob.glob("/tmp/opensips_mi_reply_*")) <= before
