"""The datagram transport over the Redis engine (Redis on 127.0.0.1:6379, a key prefix of
the test's own): the same framing, and a single mq_fetch held in Redis until its reply
went out (a reply over the buffer, or one nobody can receive, leaves the item queued)."""

from __future__ import annotations

import json

import pytest

from tests.datagram.client import Client
from tests.engine.conftest import REDIS_URL, delete_prefix, unique_prefix


@pytest.fixture
def prefix():
    name = unique_prefix()
    yield name
    delete_prefix(REDIS_URL, name)


def req(method: str, params) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1},
                      separators=(",", ":")).encode()


@pytest.mark.parametrize("kind", ["udp4", "unix"])
def test_fetch_is_held_in_redis_until_the_reply_went_out(dgram_servers, prefix, kind):
    srv = dgram_servers(kind, engine={"backend": "redis", "url": REDIS_URL, "prefix": prefix},
                        buffer_size=2048)
    srv.add("q1", "big", "x" * 3000)
    srv.add("q1", "small", "s")
    with Client(srv.datagram) as c:
        assert c.call(req("mq_fetch", ["q1"])) == b"500 Internal error"
        assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 2
    assert srv.fetch_all("q1") == [("big", "x" * 3000), ("small", "s")]
    srv.add("q1", "k", "v")
    with Client(srv.datagram) as c:
        assert c.call(req("mq_fetch", ["q1"])) == \
            b'{"jsonrpc":"2.0","result":{"Item":{"key":"k","value":"v"}},"id":1}'
        assert c.call(b"{") == b"400 Parse_error"


def test_a_bulk_fetch_is_held_in_redis_until_the_reply_went_out(dgram_servers, prefix):
    srv = dgram_servers("udp4", engine={"backend": "redis", "url": REDIS_URL, "prefix": prefix},
                        buffer_size=2048)
    items = [(f"k{i}", "y" * 500) for i in range(5)]
    for k, v in items:
        srv.add("q1", k, v)
    with Client(srv.datagram) as c:
        assert c.call(req("mq_fetch", ["q1", 5])) == b"500 Internal error"
        assert c.mi("mq_get_size", ["q1"])["result"]["Queue"]["size"] == 5
        got = json.loads(c.call(req("mq_fetch", ["q1", 2])))
        assert [(i["key"], i["value"]) for i in got["result"]] == items[:2]
    assert srv.fetch_all("q1") == items[2:]  # over HTTP: the order unchanged
