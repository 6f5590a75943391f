"""A closed arena (its server stopped cleanly): every process that attached it gets
ArenaClosed from every operation, never a silent success on queues nobody serves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mi_server.engine import Arena, ArenaClosed, QueueSpec
from mi_server.engine.shm.lifecycle import process_start_time

OPERATIONS = [
    ("mq_add", lambda a: a.mq_add("q", "k", "v")),
    ("add", lambda a: a.add("k", "k", "v")),
    ("add keyed", lambda a: a.add("k", "k2", "v")),
    ("fetch", lambda a: a.fetch("q")),
    ("mq_fetch", lambda a: a.mq_fetch("q")),
    ("fetch_many", lambda a: a.fetch_many("q", 5)),
    ("fetch_pending", lambda a: a.fetch_pending("q")),
    ("size", lambda a: a.size("q")),
    ("mq_size", lambda a: a.mq_size("q")),
    ("sizes", lambda a: a.sizes()),
    ("snapshot", lambda a: a.snapshot("q")),
    ("stats", lambda a: a.stats()),
    ("reset_stats", lambda a: a.reset_stats()),
]


@pytest.mark.parametrize("op", [o for _, o in OPERATIONS], ids=[n for n, _ in OPERATIONS])
def test_every_operation_of_an_attached_process_fails_once_the_owner_closed_it(make_arena,
                                                                               op):
    owner = make_arena([QueueSpec("q"), QueueSpec("k", addmode=2)])
    owner.add("q", "a", "1")
    producer = Arena.attach(owner.name)  # a separate mapping and descriptor
    try:
        assert producer.mq_add("q", "b", "2") is True
        owner.mark_closed()
        owner.unlink()
        with pytest.raises(ArenaClosed, match="closed by its server"):
            op(producer)
        with pytest.raises(ArenaClosed):  # and again: it stays closed
            op(producer)
        with pytest.raises(ArenaClosed):
            op(owner)
    finally:
        producer.close()


def test_a_producer_in_another_process_is_told(make_arena):
    """The issue's case: a process that attached by name keeps a mapping of the old arena
    after the server stopped; its mq_add raises instead of returning True."""
    owner = make_arena([QueueSpec("q")])
    script = (
        "import sys\n"
        "from mi_server.engine import Arena, ArenaClosed\n"
        f"a = Arena.attach({owner.name!r})\n"
        "print(a.mq_add('q', 'k', 'before'), flush=True)\n"
        "sys.stdin.readline()\n"
        "try:\n"
        "    print(a.mq_add('q', 'k', 'after'))\n"
        "except ArenaClosed as exc:\n"
        "    print('ArenaClosed:', exc)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"
        owner.mark_closed()
        owner.unlink()
        out, _ = proc.communicate("\n", timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert out.startswith("ArenaClosed: the arena was closed by its server")


def test_attaching_a_closed_arena_is_refused(make_arena):
    owner = make_arena([QueueSpec("q")])
    owner.mark_closed()
    with pytest.raises(ArenaClosed):
        Arena.attach(owner.name)


def test_the_header_names_the_creating_process(make_arena):
    arena = make_arena([QueueSpec("q")])
    assert arena.owner == (os.getpid(), process_start_time(os.getpid()))
    assert arena.owner[1] > 0
    assert process_start_time(2**22 + 12345) == 0  # beyond pid_max: no such process

