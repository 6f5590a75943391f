"""At-least-once delivery on the Redis engine (contract.Claiming): claim with a lease,
ack, renew; what a lease's end, addmode and size do to a claimed item."""

from __future__ import annotations

import time

from mi_server.engine import QueueSpec
from mi_server.engine.contract import Claiming

SPECS = [QueueSpec("plain"), QueueSpec("oldest", size=3, addmode=1),
         QueueSpec("newest", size=3, addmode=2), QueueSpec("small", size=2)]


def keys(claims) -> list[str]:
    return [c.key for c in claims]


def test_a_claim_takes_the_oldest_and_an_ack_drops_them(make_redis):
    e = make_redis(SPECS)
    assert isinstance(e, Claiming)
    for i in range(5):
        e.add("plain", f"k{i}", f"v{i}")
    got = e.claim("plain", 3, 30)
    assert [(c.key, c.value, c.claims) for c in got] == [("k0", "v0", 1), ("k1", "v1", 1),
                                                         ("k2", "v2", 1)]
    assert e.size("plain") == 2 and e.stats()["plain"].fetched == 3
    e.check_invariants()
    other = make_redis(SPECS, prefix=e.prefix)  # another instance sees only the rest
    assert keys(other.claim("plain", 10, 30)) == ["k3", "k4"]
    assert e.ack("plain", [c.token for c in got]) == 3
    assert e.ack("plain", [got[0].token]) == 0  # already acknowledged
    e.check_invariants()
    assert e.claim("plain", 10, 30) == []


def test_an_unacknowledged_claim_comes_back_to_the_head_once_its_lease_ends(make_redis):
    e = make_redis(SPECS)
    for i in range(4):
        e.add("plain", f"k{i}", f"v{i}")
    first = e.claim("plain", 3, 0.3)
    e.ack("plain", [first[0].token])
    e.add("plain", "k4", "v4")
    assert keys(e.claim("plain", 1, 30)) == ["k3"]  # the lease runs: k1, k2 stay out
    time.sleep(0.4)
    again = e.claim("plain", 10, 30)
    assert [(c.key, c.claims) for c in again] == [("k1", 2), ("k2", 2), ("k4", 1)]
    assert e.ack("plain", [first[1].token]) == 1  # the late holder's ack still counts
    e.check_invariants()
    assert e.stats()["plain"].fetched == 5  # a given-back claim is not counted twice


def test_a_plain_fetch_also_gives_expired_claims_back(make_redis):
    e = make_redis(SPECS)
    e.add("plain", "a", "1")
    e.add("plain", "b", "2")
    e.claim("plain", 1, 0.1)
    time.sleep(0.2)
    assert e.fetch_many("plain", 5) == [("a", "1"), ("b", "2")]
    e.check_invariants()  # no claim count left behind


def test_renew_keeps_a_claim_and_zero_gives_it_back_at_once(make_redis):
    e = make_redis(SPECS)
    e.add("plain", "a", "1")
    e.add("plain", "b", "2")
    held = e.claim("plain", 2, 0.3)
    assert e.renew("plain", [held[0].token], 30) == 1
    time.sleep(0.4)
    assert keys(e.claim("plain", 5, 30)) == ["b"]  # b's lease ended, a's was renewed
    assert e.renew("plain", [held[0].token], 0) == 1
    assert keys(e.claim("plain", 5, 30)) == ["a"]
    e.check_invariants()


def test_a_claimed_key_is_free_for_addmode_and_comes_back_under_it(make_redis):
    e = make_redis(SPECS)
    for q in ("oldest", "newest"):
        e.add(q, "k", "claimed")
        (c,) = e.claim(q, 1, 0.1)
        e.add(q, "k", "queued meanwhile")  # the claimed item is out of the queue
        assert e.snapshot(q) == [("k", "queued meanwhile")]
        time.sleep(0.2)
        # coming back, the claimed one meets its key queued: dropped by addmode
        assert e.claim(q, 5, 30)[0].value == "queued meanwhile"
        assert e.stats()[q].dropped_addmode == 1
        assert e.ack(q, [c.token]) == 0  # it is gone
    e.check_invariants()


def test_a_claimed_item_is_not_evicted_but_a_returning_one_may_be(make_redis):
    e = make_redis(SPECS)
    e.add("small", "a", "1")
    (c,) = e.claim("small", 1, 0.1)
    e.add("small", "b", "2")
    e.add("small", "c", "3")  # full without a: nothing evicted
    assert e.stats()["small"].dropped_size == 0
    time.sleep(0.2)
    assert keys(e.claim("small", 5, 30)) == ["b", "c"]  # a came back as the oldest: evicted
    assert e.stats()["small"].dropped_size == 1
    assert e.ack("small", [c.token]) == 0
    e.check_invariants()


def test_a_dead_consumers_batch_comes_back_in_order(make_redis):
    e = make_redis(SPECS)
    for i in range(30):  # seqs 1..30: '10' sorts before '9' as text, not as numbers
        e.add("plain", f"k{i}", "")
    e.claim("plain", 30, 0.1)
    time.sleep(0.2)
    assert keys(e.claim("plain", 30, 30)) == [f"k{i}" for i in range(30)]
    e.check_invariants()
