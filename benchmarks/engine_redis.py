"""Redis engine benchmark: per-operation costs next to the floor, a bare redis-py round
trip, measured in the same run (not a test).

Run: .venv/bin/python benchmarks/engine_redis.py [--url redis://HOST:PORT/0] [--n N]

Without --url it starts a private redis-server (no persistence) on a free port, so other
clients' commands neither slow it nor blur its command statistics.  The floor is an
EVALSHA of `return 1` with the same four keys and the same arguments as an add (so the
same request bytes), through the same client (redis-py's generic execute_command); a
PING is shown too.  The engine does not use that path on a single Redis: it sends on a
connection of its own (mi_server/engine/redis/direct.py), so each row also shows a second
floor, the same EVALSHA sent on the engine's path, which leaves only what the operation
itself costs (its function's Redis time, its encoding and decoding).  Round trips per
operation are counted on the client (every request written to a connection); "server us"
is Redis's own time per call (INFO commandstats) for the same calls.  Target: one round
trip per MI operation (a bulk fetch included) and each operation within 1.3x the floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.connection  # noqa: E402

from mi_server.engine import QueueSpec  # noqa: E402
from mi_server.engine.redis import RedisEngine  # noqa: E402
from mi_server.engine.redis.engine import NKEYS, queue_keys  # noqa: E402

VALUE = "v" * 20
TARGET = 1.3
_sent = [0]
_send = redis.connection.Connection.send_packed_command


def _counting_send(self, command, check_health=True):  # type: ignore[no-untyped-def]
    _sent[0] += 1
    return _send(self, command, check_health)


redis.connection.Connection.send_packed_command = _counting_send  # type: ignore[method-assign]


def per_op(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(microseconds per call, round trips per call) of fn(i) for i in range(n)."""
    sent = _sent[0]
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    t1 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (_sent[0] - sent) / n


def interleaved(op: Callable[[int], object], floor: Callable[[int], object],
                direct: Callable[[int], object], n: int,
                rounds: int = 7) -> tuple[float, float, float, float]:
    """(op us, floor us, direct floor us, op round trips) per call: `rounds` alternating
    batches of n//rounds calls each, the quickest batch of each kept, so that all three
    see the same machine (a loaded host drifts by more than the difference measured)."""
    m = max(n // rounds, 1)
    best_op = best_floor = best_direct = float("inf")
    trips = 0.0
    for r in range(rounds):
        us, trips = per_op(lambda i, base=r * m: op(base + i), m)
        best_op = min(best_op, us)
        best_floor = min(best_floor, per_op(floor, m)[0])
        best_direct = min(best_direct, per_op(direct, m)[0])
    return best_op, best_floor, best_direct, trips


def server_time(client: redis.Redis, command: str) -> tuple[int, int]:
    """(calls, microseconds) Redis has spent on `command` so far."""
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


Row = tuple[str, float, float, float, float, float]


def one_process(url: str, n: int) -> list[Row]:
    """(operation, us per call, floor us and direct floor us in the same batches, round
    trips per call, Redis's own us per call)."""
    prefix = f"mqbench-{uuid.uuid4().hex[:8]}"
    engine = RedisEngine.open(url, prefix, [QueueSpec("q"), QueueSpec("k", addmode=2)])
    client = engine._client
    try:
        keys = queue_keys(prefix, "q")
        sha = client.script_load("return 1")
        kb, vb = b"key00000", VALUE.encode()

        def floor(i: int) -> object:
            return client.execute_command("EVALSHA", sha, NKEYS, *keys, kb, vb)

        def direct(i: int) -> object:
            return engine._exec("EVALSHA", sha, NKEYS, *keys, kb, vb)

        def row(name: str, op: Callable[[int], object], calls: int = n,
                command: str = "fcall") -> None:
            before = server_time(client, command)
            us, fl, dfl, trips = interleaved(op, floor, direct, calls)
            after = server_time(client, command)
            served = (after[1] - before[1]) / max(after[0] - before[0], 1)
            rows.append((name, us, fl, dfl, trips, served))

        rows: list[Row] = []
        row("PING", lambda i: client.ping(), command="ping")
        row("the floor itself (EVALSHA return 1)", floor, command="evalsha")
        row("add (addmode 0)", lambda i: engine.add("q", f"key{i:06d}", VALUE))
        row("fetch", lambda i: engine.fetch("q"))
        row("add (addmode 2, key replaced)", lambda i: engine.add("k", f"key{i % 100}", VALUE))
        row("size", lambda i: engine.size("q"), command="hget")
        row("sizes (2 queues)", lambda i: engine.sizes(), command="hget")
        for i in range(n):
            engine.add("q", f"key{i:06d}", VALUE)
        row("fetch_many(100), per call", lambda i: engine.fetch_many("q", 100), n // 100)
        for i in range(n):
            engine.add("q", f"key{i:06d}", VALUE)
        claimed: list = []
        row("claim(100) (at-least-once), per call",
            lambda i: claimed.extend(engine.claim("q", 100, 600)), n // 100)
        tokens = [c.token for c in claimed]
        row("ack of one claimed item", lambda i: engine.ack("q", [tokens[i]]), len(tokens))
        return rows
    finally:
        engine.close()
        cleanup = redis.Redis.from_url(url)
        cleanup.delete(*cleanup.keys(f"{prefix}:*") or [b"-"])
        cleanup.close()


def four_processes(url: str, procs: int, seconds: float) -> tuple[float, float, float]:
    """(add+fetch pairs per second, bare round trips per second through redis-py's generic
    path and through the engine's), all processes together, on one queue (one slot: the
    worst case for contention)."""
    prefix = f"mqbench-{uuid.uuid4().hex[:8]}"
    RedisEngine.open(url, prefix, [QueueSpec("q")]).close()

    def run(kind: str) -> float:
        r, w = os.pipe()
        start_at = time.time() + 0.3
        pids = []
        for _ in range(procs):
            pid = os.fork()
            if pid == 0:
                os.close(r)
                engine = RedisEngine.open(url, prefix, [QueueSpec("q")])
                client = engine._client
                sha = client.script_load("return 1")
                keys = queue_keys(prefix, "q")
                while time.time() < start_at:
                    pass
                end = time.perf_counter() + seconds
                ops = 0
                while time.perf_counter() < end:
                    if kind == "engine":
                        engine.add("q", "k", VALUE)
                        engine.fetch("q")
                    elif kind == "direct":
                        engine._exec("EVALSHA", sha, NKEYS, *keys, b"k", b"v")
                        engine._exec("EVALSHA", sha, NKEYS, *keys, b"k", b"v")
                    else:
                        client.execute_command("EVALSHA", sha, NKEYS, *keys, b"k", b"v")
                        client.execute_command("EVALSHA", sha, NKEYS, *keys, b"k", b"v")
                    ops += 1
                os.write(w, f"{ops}\n".encode())
                os._exit(0)
            pids.append(pid)
        os.close(w)
        with os.fdopen(r) as f:
            total = sum(int(line) for line in f)
        for pid in pids:
            os.waitpid(pid, 0)
        return total / seconds

    try:
        return run("engine"), run("bare"), run("direct")
    finally:
        cleanup = redis.Redis.from_url(url)
        cleanup.delete(*cleanup.keys(f"{prefix}:*") or [b"-"])
        cleanup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="default: a private redis-server")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    private = None
    if args.url is None:
        private, args.url = start_private_redis()
    try:
        report(args)
    finally:
        if private is not None:
            private.kill()
            private.wait()


def start_private_redis() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="mqbench-redis-")
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                             str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, url


def report(args: argparse.Namespace) -> None:
    rows = one_process(args.url, args.n)
    print(f"Redis engine, 1 process, {args.n} calls each (quickest of 7 batches, each next "
          f"to a batch of each floor), {args.url}")
    print(f"{'operation':37} {'us/call':>8} {'floor us':>9} {'x floor':>8} "
          f"{'direct us':>10} {'x direct':>9} {'trips':>6} {'server us':>10}")
    for name, us, fl, dfl, trips, served in rows:
        mark = ""
        if name != "PING" and "per call" not in name and "floor" not in name:
            mark = "  ok" if us <= TARGET * fl else "  OVER 1.3x"
        print(f"{name:37} {us:8.1f} {fl:9.1f} {us / fl:8.2f} {dfl:10.1f} {us / dfl:9.2f} "
              f"{trips:6.2f} {served:10.2f}{mark}")
    pairs, bare, direct = four_processes(args.url, args.procs, args.seconds)
    print(f"\n{args.procs} processes on one queue, {args.seconds} s each:")
    for label, rate in (("add+fetch pairs/s", pairs), ("bare EVALSHA pairs/s", bare),
                        ("direct EVALSHA pairs/s", direct)):
        ratio = "" if rate is pairs else f"  ratio {rate / pairs:.2f}x"
        print(f"  {label:22} {rate:8.0f}  ({1e6 / (2 * rate / args.procs):.1f} us/op per "
              f"process){ratio}")


if __name__ == "__main__":
    main()
