"""OpenSIPS mi_datagram's framing over a real server: UDP (IPv4, IPv6) and a unix socket."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.datagram.client import Client

KINDS = ["udp4", "udp6", "unix"]
PARSE_ERROR = b"400 Parse_error"
INTERNAL_ERROR = b"500 Internal error"


def req(method: str, params=None, id_=1) -> bytes:
    body = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    if id_ is not None:
        body["id"] = id_
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize("kind", KINDS)
def test_one_request_one_compact_reply_with_the_bytes_after_it_ignored(dgram_servers, kind):
    srv = dgram_servers(kind)
    with Client(srv.datagram) as c:
        assert c.call(req("mq_add", ["q1", "k", "v"]) + b"\n") == \
            b'{"jsonrpc":"2.0","result":"OK","id":1}'
        assert c.call(b'{"jsonrpc": "2.0", "id": "7", "method": "mq_fetch", '
                      b'"params": {"name": "q1"}}') == \
            b'{"jsonrpc":"2.0","result":{"Item":{"key":"k","value":"v"}},"id":"7"}'


@pytest.mark.parametrize("kind", KINDS)
def test_notifications_and_empty_datagrams_get_no_reply(dgram_servers, kind):
    srv = dgram_servers(kind)
    with Client(srv.datagram) as c:
        assert c.call(b"", timeout=0.5) is None
        assert c.call(req("mq_add", ["q1", "n", "1"], id_=None), timeout=0.5) is None
        # the notification ran before the next request was read
        assert c.mi("mq_get_size", ["q1"])["result"] == {"Queue": {"name": "q1", "size": 1}}


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_that_does_not_parse_is_400_parse_error(dgram_servers, kind):
    srv = dgram_servers(kind)
    with Client(srv.datagram) as c:
        for bad in (b"{", b"not json", b"\xff\xfe", b'{"jsonrpc":"2.0","method":"ps","id":1',
                    b'{"jsonrpc":"2.0","method":"p\x00s","id":1}', b"   "):
            assert c.call(bad) == PARSE_ERROR, bad


def test_request_at_the_buffer_is_served_one_byte_over_is_400(dgram_servers):
    srv = dgram_servers("unix", buffer_size=1024)
    with Client(srv.datagram) as c:
        body = req("mq_get_size", ["q1"])
        assert c.call(body + b" " * (1024 - len(body))).startswith(b'{"jsonrpc":"2.0","result"')
        assert c.call(body + b" " * (1025 - len(body))) == PARSE_ERROR


def test_the_default_buffer_is_opensips_65457_bytes(dgram_servers):
    srv = dgram_servers("udp4")
    with Client(srv.datagram) as c:
        body = req("mq_get_size", ["q1"])
        assert c.call(body + b" " * (65457 - len(body))).startswith(b'{"jsonrpc"')
        assert c.call(body + b" " * (65458 - len(body))) == PARSE_ERROR


@pytest.mark.parametrize("kind", ["udp4", "unix"])
@pytest.mark.parametrize("params", [["q1"], ["q1", "5"], {"name": "q1", "limit": 100}],
                         ids=["single", "bulk", "named-bulk"])
def test_a_fetch_reply_over_the_buffer_is_500_and_every_item_stays_in_order(
        dgram_servers, kind, params):
    srv = dgram_servers(kind, buffer_size=2048)
    big = "x" * 3000 if len(params) == 1 else "y" * 500
    items = [(f"k{i}", big if i == 0 or len(params) > 1 else f"v{i}") for i in range(5)]
    for k, v in items:
        srv.add("q1", k, v)
    with Client(srv.datagram) as c:
        assert c.call(req("mq_fetch", params)) == INTERNAL_ERROR
        assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 5
    assert srv.fetch_all("q1") == items  # over HTTP: nothing lost, the order unchanged


def test_a_batch_with_a_fetch_is_one_invalid_request_and_takes_nothing(dgram_servers):
    """A batch's reply size is known only after its fetches took their items, so a batch
    asking for mq_fetch gets OpenSIPS's answer to any datagram batch and takes nothing,
    however large its reply would have been."""
    srv = dgram_servers("udp4", buffer_size=2048)
    items = [("k0", "x" * 3000), ("k1", "v1")]
    for k, v in items:
        srv.add("q1", k, v)
    batch = (b'[{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":1},'
             b'{"jsonrpc":"2.0","method":"mq_fetch","params":["q1"],"id":2}]')
    with Client(srv.datagram) as c:
        assert c.call(batch) == \
            b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}'
        # the member name is matched as every request's is (case-insensitively)
        assert c.call(batch.replace(b'"method":"mq_fetch"', b'"METHOD":"mq_fetch"')) == \
            b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}'
        # a method name is exact: MQ_FETCH is no command, so that batch is served
        got = c.call(batch.replace(b"mq_fetch", b"MQ_FETCH"))
        assert got.startswith(b'[{"jsonrpc":"2.0","result":{"Queue":')
    assert srv.fetch_all("q1") == items


def test_a_fetch_whose_reply_cannot_be_delivered_removes_nothing(dgram_servers, short_tmp):
    """A unix sender that does not read: once its queue is full (ten datagrams), a reply
    to it is dropped instead of blocking, and a held fetch whose reply was dropped is
    undone: its item stays queued."""
    srv = dgram_servers("unix")
    srv.add("q1", "a", "1")
    srv.add("q1", "b", "2")
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(short_tmp / "deaf.sock"))
    try:
        for _ in range(15):
            deaf.sendto(req("mq_get_size", ["q1"]), srv.datagram)
        for _ in range(3):
            deaf.sendto(req("mq_fetch", ["q1"]), srv.datagram)
        with Client(srv.datagram) as c:  # served after all of the above
            assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 2
        assert srv.fetch_all("q1") == [("a", "1"), ("b", "2")]
        assert "the sender does not read its replies" in srv.stderr()
    finally:
        deaf.close()


def test_an_unread_unix_client_does_not_stall_the_others(dgram_servers, short_tmp):
    srv = dgram_servers("unix")
    hostile = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    hostile.bind(str(short_tmp / "hostile.sock"))
    try:
        for _ in range(200):  # never read: its queue fills after ~10 replies
            hostile.sendto(req("mq_get_sizes"), srv.datagram)
        with Client(srv.datagram) as c:
            t0 = time.monotonic()
            for _ in range(20):
                assert c.mi("mq_get_size", ["q1"], timeout=2.0)["result"]["Queue"]["size"] == 0
            assert time.monotonic() - t0 < 5.0
    finally:
        hostile.close()


def test_an_unbound_unix_sender_cannot_take_items(dgram_servers):
    """No address to answer: a fetch from it runs held and is undone."""
    srv = dgram_servers("unix")
    srv.add("q1", "a", "1")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as anon:
        anon.sendto(req("mq_fetch", ["q1"]), srv.datagram)
    with Client(srv.datagram) as c:  # served after the anonymous one
        assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 1
    assert srv.fetch_all("q1") == [("a", "1")]


def test_batches_are_processed_as_over_http(dgram_servers):
    srv = dgram_servers("udp4")
    with Client(srv.datagram) as c:
        got = c.call(b'[{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":1},'
                     b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q2"]},'
                     b'{"jsonrpc":"2.0","method":"nosuch","id":2}]')
    assert got == (b'[{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":0}},"id":1},'
                   b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},'
                   b'"id":2}]')
