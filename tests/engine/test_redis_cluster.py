"""The Redis engine on a Redis Cluster of three masters that the test starts: queues in
different slots on different nodes, every queue listed, a bulk fetch on one node."""

from __future__ import annotations

import binascii

import pytest
import redis

from mi_server.engine import QueueSpec, QueueStats
from mi_server.engine.redis import RedisEngine
from mi_server.engine.redis.engine import queue_keys
from tests.redisproc import RedisCluster


def key_slot(key: bytes) -> int:
    """Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag, mod 16384."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) % 16384


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield made
    made.stop()


def queues_on_distinct_nodes(client: redis.RedisCluster, prefix: str, count: int
                             ) -> list[str]:
    """Queue names whose keys land on `count` different masters."""
    chosen: dict[str, str] = {}
    for i in range(1000):
        name = f"q{i}"
        node = client.get_node_from_key(queue_keys(prefix, name)[0]).name
        chosen.setdefault(node, name)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("no queue names spread over the nodes")


def test_queues_in_different_slots_are_served_listed_and_bulk_fetched_on_one_node(cluster):
    prefix = "c1"
    probe = redis.RedisCluster.from_url(f"redis://{cluster.addresses[0]}")
    try:
        names = queues_on_distinct_nodes(probe, prefix, 3)
        specs = [QueueSpec(names[0]), QueueSpec(names[1], size=2), QueueSpec(names[2],
                                                                              addmode=2)]
        engine = RedisEngine.open(cluster.addresses, prefix, specs)
        other = RedisEngine.open(list(reversed(cluster.addresses)), prefix, specs)
        try:
            for n, name in enumerate(names):
                for i in range(3):
                    engine.add(name, "same" if n == 2 else f"k{i}", f"{name}-{i}")
            # every queue listed, reverse definition order, whichever node holds it
            assert other.sizes() == [(names[2], 1), (names[1], 2), (names[0], 3)]
            assert other.stats()[names[1]] == QueueStats(2, 3, 0, 1, 0)
            # a queue's keys are all in one slot, so a bulk fetch is one call on one node
            slots = {key_slot(k) for k in queue_keys(prefix, names[0])}
            assert len(slots) == 1
            node = probe.get_node_from_key(queue_keys(prefix, names[0])[0])
            assert other.fetch_many(names[0], 10) == [("k0", f"{names[0]}-0"),
                                                      ("k1", f"{names[0]}-1"),
                                                      ("k2", f"{names[0]}-2")]
            assert probe.get_redis_connection(node).hget(queue_keys(prefix, names[0])[0],
                                                         "f") == b"3"
            assert engine.fetch(names[2]) == ("same", f"{names[2]}-2")
            assert engine.fetch_pending(names[1]) == ("k1", f"{names[1]}-1")
            engine.settle(False)
            assert other.snapshot(names[1]) == [("k1", f"{names[1]}-1"),
                                                ("k2", f"{names[1]}-2")]
            engine.check_invariants()
            # the three queues really are on three different masters
            assert len({probe.get_node_from_key(queue_keys(prefix, q)[0]).name
                        for q in names}) == 3
        finally:
            engine.close()
            other.close()
    finally:
        probe.close()


def test_a_server_on_the_cluster_lists_every_queue_over_mi(cluster, tmp_path):
    from tests.serverproc import Server, free_port

    probe = redis.RedisCluster.from_url(f"redis://{cluster.addresses[0]}")
    try:
        names = queues_on_distinct_nodes(probe, "c2", 3)
    finally:
        probe.close()
    srv = Server(tmp_path, free_port(), queues=[f"name={n}" for n in names], extra={"engine": {
        "backend": "redis", "url": cluster.addresses, "prefix": "c2"}})
    with srv:
        for name in names:
            srv.add(name, "k", name)
        assert srv.mi("mq_get_sizes") == {"Queue": [{"name": n, "size": 1}
                                                    for n in reversed(names)]}
        assert srv.fifo_mi("mq_fetch", {"name": names[1], "limit": 5}) == [
            {"key": "k", "value": names[1]}]
        assert srv.stop() == 0
