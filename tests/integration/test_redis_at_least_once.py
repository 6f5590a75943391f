"""At-least-once consumers on Redis (docs/consumers.md): real servers sharing one Redis
prefix, consumer processes running tests.integration.claim_handlers:record, a consumer
killed with SIGKILL while its handler blocks mid-batch."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import REDIS_URL, delete_prefix, unique_prefix
from tests.integration.test_redis_instances import Instances
from tests.serverproc import children_of

HANDLER = "tests.integration.claim_handlers:record"
LEASE = 2.0


@pytest.fixture
def instances() -> Iterator[Instances]:
    made = Instances()
    yield made
    made.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = unique_prefix()
    yield name
    delete_prefix(REDIS_URL, name)


def consumer(**kw) -> dict:
    return {"queue": "shared", "processes": 1, "batch": 5, "interval": 0.05,
            "handler": HANDLER, "delivery": "at-least-once", "lease": LEASE, **kw}


def handled(where: Path) -> list[dict]:
    path = where / "handled.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_consumer_killed_mid_batch_has_its_items_handled_by_another_instance(
        instances, prefix, tmp_path):
    env = {"MQ_CLAIM_DIR": str(tmp_path)}
    (tmp_path / "block").touch()
    producer = instances.make(prefix)
    keys = ["k0", "k1", "block2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"]
    for k in keys:
        producer.add("shared", k, f"v-{k}")
    victim = instances.make(prefix, consumers=[consumer()], env=env)
    wait_for(lambda: (tmp_path / "blocked").exists())
    blocked_pid = int((tmp_path / "blocked").read_text())
    assert blocked_pid in children_of(victim.proc.pid)
    # the batch of 5 is claimed: k0, k1 handled and acknowledged, block2 in hand
    assert [h["key"] for h in handled(tmp_path)] == ["k0", "k1"]
    assert producer.mi("mq_get_size", ["shared"])["Queue"]["size"] == 5
    os.kill(blocked_pid, signal.SIGKILL)  # the consumer process, mid-batch
    victim.kill()  # and its instance, so that only the other instance's consumer is left
    (tmp_path / "block").unlink()
    other = instances.make(prefix, consumers=[consumer()], env=env)
    wait_for(lambda: len(handled(tmp_path)) >= len(keys))
    time.sleep(0.5)  # anything handled twice would show up now
    got = handled(tmp_path)
    assert sorted(h["key"] for h in got) == sorted(keys)  # each once: nothing failed
    others = set(children_of(other.proc.pid))
    late = [h for h in got if h["key"] in ("block2", "k3", "k4")]
    assert {h["pid"] for h in late} <= others
    # the killed batch's rest came back only once its lease (from the claim, just before
    # k0 was handled) had ended, in its order; the other consumer took k5.. meanwhile
    assert [h["key"] for h in late] == ["block2", "k3", "k4"]
    assert min(h["t"] for h in late) >= got[0]["t"] + LEASE - 0.1
    assert [h["key"] for h in got if h["key"] not in ("block2", "k3", "k4")] == \
        ["k0", "k1", "k5", "k6", "k7", "k8", "k9"]
    assert other.mi("mq_get_size", ["shared"])["Queue"]["size"] == 0


def test_a_failing_handler_gets_its_item_again(instances, prefix, tmp_path):
    env = {"MQ_CLAIM_DIR": str(tmp_path)}
    (tmp_path / "fail-count").write_text("2")
    srv = instances.make(prefix, consumers=[consumer(retry=0.3)], env=env)
    for k in ["a", "fail-b", "c"]:
        srv.add("shared", k, f"v-{k}")
    wait_for(lambda: len(handled(tmp_path)) == 3)
    time.sleep(0.5)
    got = handled(tmp_path)
    assert sorted(h["key"] for h in got) == ["a", "c", "fail-b"]
    failed = [json.loads(ln) for ln in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert [f["key"] for f in failed] == ["fail-b", "fail-b"]
    # each retry came after the retry delay
    times = [f["t"] for f in failed] + [h["t"] for h in got if h["key"] == "fail-b"]
    assert all(b - a >= 0.25 for a, b in zip(times, times[1:], strict=False))
    assert srv.mi("mq_get_size", ["shared"])["Queue"]["size"] == 0
    assert "handler failed for queue='shared' key='fail-b'" in srv.stderr()


def test_max_deliveries_drops_an_item_that_always_fails(instances, prefix,
                                                        tmp_path):
    env = {"MQ_CLAIM_DIR": str(tmp_path)}
    (tmp_path / "fail-count").write_text("1000")
    srv = instances.make(prefix, consumers=[consumer(retry=0.1, max_deliveries=3)], env=env)
    srv.add("shared", "fail-x", "poison")
    srv.add("shared", "y", "fine")
    wait_for(lambda: "dropped after 3 deliveries" in srv.stderr())
    failed = (tmp_path / "failed.jsonl").read_text().splitlines()
    assert len(failed) == 3
    assert [h["key"] for h in handled(tmp_path)] == ["y"]
    assert srv.mi("mq_get_size", ["shared"])["Queue"]["size"] == 0


def test_consumers_on_two_instances_without_failures_handle_each_item_exactly_once(
        instances, prefix, tmp_path):
    env = {"MQ_CLAIM_DIR": str(tmp_path)}
    consumers = [consumer(processes=2)]
    a = instances.make(prefix, consumers=consumers, env=env)
    b = instances.make(prefix, consumers=consumers, env=env)
    n = 300
    for i in range(n):
        (a if i % 2 else b).add("shared", f"k{i}", f"v{i}")
    wait_for(lambda: len(handled(tmp_path)) >= n)
    time.sleep(0.3)
    got = handled(tmp_path)
    assert sorted(h["key"] for h in got) == sorted(f"k{i}" for i in range(n))
    pids = {h["pid"] for h in got}
    assert pids & set(children_of(a.proc.pid)) and pids & set(children_of(b.proc.pid))
    assert a.mi("mq_get_size", ["shared"])["Queue"]["size"] == 0


def test_a_slow_batch_keeps_its_lease_while_it_is_worked_through(instances, prefix,
                                                                 tmp_path):
    """Batches of 3 items of 0.6 s each under a 1 s lease: the rest of a batch is renewed
    between items, so the other instance's consumer never takes an item still in a batch
    (without the renewal the third item of each batch would be handled twice)."""
    env = {"MQ_CLAIM_DIR": str(tmp_path)}
    consumers = [consumer(batch=3, lease=1.0)]
    producer = instances.make(prefix)
    for i in range(6):
        producer.add("shared", f"slow{i}", "")
    a = instances.make(prefix, consumers=consumers, env=env)
    b = instances.make(prefix, consumers=consumers, env=env)
    wait_for(lambda: len(handled(tmp_path)) >= 6)
    time.sleep(1.5)  # a third item taken again after a lapsed lease would show up now
    got = handled(tmp_path)
    assert sorted(h["key"] for h in got) == [f"slow{i}" for i in range(6)]
    assert a.stderr().count("may be handled again") == b.stderr().count(
        "may be handled again") == 0


def test_a_stopping_consumer_gives_its_batch_s_rest_back_at_once(instances, prefix,
                                                                 tmp_path):
    """SIGTERM while a handler runs: the item in hand is finished and acknowledged, the
    rest of the batch goes back to the queue at once, not after the (30 s) lease."""
    env = {"MQ_CLAIM_DIR": str(tmp_path)}
    producer = instances.make(prefix)
    keys = ["slow0", "k1", "k2", "k3", "k4"]
    for k in keys:
        producer.add("shared", k, "")
    a = instances.make(prefix, consumers=[consumer(lease=30.0)], env=env)
    wait_for(lambda: (tmp_path / "slow-started").exists())
    assert a.stop() == 0
    assert [h["key"] for h in handled(tmp_path)] == ["slow0"]  # finished, then stopped
    assert producer.mi("mq_get_size", ["shared"])["Queue"]["size"] == 0  # held, not queued
    started = time.monotonic()
    instances.make(prefix, consumers=[consumer(lease=30.0)], env=env)
    wait_for(lambda: len(handled(tmp_path)) >= len(keys), timeout=20)
    assert time.monotonic() - started < 20  # not the lease
    time.sleep(0.3)
    assert [h["key"] for h in handled(tmp_path)] == keys
