"""Random and mutated datagrams interleaved with valid ones against a real server: every
valid request is answered exactly, the listener never crashes or wedges, and the queue the
valid requests fill holds exactly what they added, in order."""

from __future__ import annotations

import json
import random
import socket

import pytest

from tests.datagram.client import Client

SEEDS = [1, 2]
TEMPLATES = [
    b'{"jsonrpc":"2.0","method":"mq_fetch","params":["fz","3"],"id":1}',
    b'{"jsonrpc":"2.0","method":"mq_add","params":{"name":"fz","key":"k","value":"v"},"id":"x"}',
    b'{"jsonrpc":"2.0","method":"mq_get_sizes","id":null}',
    b'[{"jsonrpc":"2.0","method":"mq_fetch","params":["fz"],"id":1},{"jsonrpc":"2.0"}]',
    b'{"jsonrpc":"2.0","method":"which","params":{"command":"mq_fetch"}}',
    b'{"jsonrpc":"2.0","method":"get_statistics","params":[["all"]],"id":3}',
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            del b[pos:pos + rng.randint(1, 8)]
        elif op == 3:
            b = b[:pos]
        elif op == 4:
            b[pos:pos] = rng.choice([b"{", b"[", b'"', b"\\", b"\x00", b"\xff", b"1e999999",
                                     b"-", b"[" * 200, b'"\\ud800"', b",", b"}"])
        else:
            b = b * rng.randint(2, 4)
    return bytes(b)


def random_datagram(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if kind == 1:
        return b"[" * rng.randint(1, 100000)  # deep nesting, up to over the buffer
    if kind == 2:
        return b" " * rng.randint(0, 70000)
    return mutate(rng, rng.choice(TEMPLATES))


@pytest.mark.parametrize("kind", ["udp4", "unix"])
@pytest.mark.parametrize("seed", SEEDS)
def test_garbage_never_disturbs_the_valid_requests(dgram_servers, short_tmp, kind, seed):
    srv = dgram_servers(kind, queues=["name=q1", "name=fz"])
    listener = srv.pids_by_type()["MI Datagram"]
    rng = random.Random(seed)
    if kind == "unix":
        noise = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        noise.bind(str(short_tmp / "noise.sock"))  # never read: its replies are dropped
        target: object = srv.datagram
    else:
        noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        host, _, port = srv.datagram[4:].rpartition(":")
        target = (host, int(port))
    added = []
    with noise, Client(srv.datagram) as c:
        for i in range(150):
            for _ in range(rng.randint(1, 4)):
                try:
                    noise.sendto(random_datagram(rng), target)
                except OSError:  # over what one datagram can carry
                    pass
            key = f"k{i}"
            body = {"jsonrpc": "2.0", "method": "mq_add", "params": ["q1", key, f"v{i}"],
                    "id": i}
            assert c.call(json.dumps(body).encode()) == \
                b'{"jsonrpc":"2.0","result":"OK","id":%d}' % i, (seed, i)
            added.append((key, f"v{i}"))
            if i % 25 == 0:
                assert c.mi("mq_get_size", ["q1"])["result"] == {
                    "Queue": {"name": "q1", "size": len(added)}}
    assert srv.pids_by_type()["MI Datagram"] == listener  # never crashed
    assert srv.fetch_all("q1") == added
    assert "Traceback" not in srv.stderr()
