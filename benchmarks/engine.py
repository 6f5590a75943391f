"""Engine benchmark: prints per-operation costs next to their targets (not a test).

Run: .venv/bin/python benchmarks/engine.py
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mi_server.engine import Arena, QueueSpec  # noqa: E402

VALUE = "v" * 20


def _arena(size: int, queues: list[QueueSpec]) -> Arena:
    return Arena.create(f"mqbench-{uuid.uuid4().hex[:8]}", size, queues)


def single_process(n: int = 200_000) -> tuple[float, float]:
    a = _arena(64 << 20, [QueueSpec("q")])
    try:
        keys = [f"key{i:05d}" for i in range(n)]
        add = a.add
        t0 = time.perf_counter()
        for k in keys:
            add("q", k, VALUE)
        t1 = time.perf_counter()
        fetch = a.fetch
        for _ in range(n):
            fetch("q")
        t2 = time.perf_counter()
        return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6
    finally:
        a.close()
        a.unlink()


def multi_process(procs: int, seconds: float = 1.5) -> float:
    """Aggregate add+fetch operations per second of `procs` processes on one queue."""
    a = _arena(64 << 20, [QueueSpec("q")])
    try:
        r, wfd = os.pipe()
        pids = []
        start_at = time.time() + 0.2
        for _ in range(procs):
            pid = os.fork()
            if pid == 0:
                os.close(r)
                while time.time() < start_at:
                    pass
                end = time.perf_counter() + seconds
                ops = 0
                while time.perf_counter() < end:
                    for _ in range(100):
                        a.add("q", "k", VALUE)
                        a.fetch("q")
                    ops += 200
                os.write(wfd, f"{ops}\n".encode())
                os._exit(0)
            pids.append(pid)
        os.close(wfd)
        for pid in pids:
            os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            total = sum(int(line) for line in f)
        return total / seconds
    finally:
        a.close()
        a.unlink()


def keyed_add_cost(queued: int, reps: int = 100_000) -> float:
    """µs per addmode-2 add that replaces one of `queued` items."""
    size = max(64 << 20, queued * 160)
    a = _arena(size, [QueueSpec("k", addmode=2)])
    try:
        keys = [f"key{i:07d}" for i in range(queued)]
        add = a.add
        for k in keys:
            add("k", k, VALUE)
        # replace keys spread over the whole queue (each replacement moves one to the tail)
        step = max(1, queued // reps)
        sample = [keys[(i * step) % queued] for i in range(reps)]
        t0 = time.perf_counter()
        for k in sample:
            add("k", k, VALUE)
        t1 = time.perf_counter()
        assert a.size("k") == queued
        return (t1 - t0) / reps * 1e6
    finally:
        a.close()
        a.unlink()


def overhead_per_item(n: int = 10_000) -> tuple[float, int]:
    """Arena bytes per item beyond key+value: average for 8+20 byte items, and the worst."""
    a = _arena(16 << 20, [QueueSpec("q")])
    try:
        for i in range(n):
            a.add("q", f"key{i:05d}", VALUE)
        avg = a.used_bytes() / n - (8 + len(VALUE))
    finally:
        a.close()
        a.unlink()
    from mi_server.engine.shm.alloc import block_words

    worst = max(block_words(0, pay) * 8 - pay for pay in range(64))
    return avg, worst


def main() -> None:
    add_us, fetch_us = single_process()
    print(f"add   (addmode 0, 1 process): {add_us:6.2f} µs/op   target <= 3 µs")
    print(f"fetch (addmode 0, 1 process): {fetch_us:6.2f} µs/op   target <= 3 µs")
    for procs in (1, 2, 4):
        print(f"{procs} process(es), one queue, add+fetch: {multi_process(procs):10,.0f} ops/s")
    small = keyed_add_cost(100)
    big = keyed_add_cost(1_000_000)
    print(f"addmode 2 add, 100 queued:       {small:6.2f} µs/op")
    print(f"addmode 2 add, 1,000,000 queued: {big:6.2f} µs/op   ratio {big / small:.2f}"
          "   target <= 1.5x")
    avg, worst = overhead_per_item()
    print(f"arena bytes per item beyond key+value: {avg:.1f} (8+20 B items), "
          f"worst case {worst}   target <= 72 B (the 56-byte item header holds its add time)")


if __name__ == "__main__":
    main()
