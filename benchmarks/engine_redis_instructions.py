"""Instructions per Redis engine operation, counted by callgrind: Redis's side and the
client's (not a test).

engine_redis.py measures time, which on a shared host drifts by more than the
differences measured; instruction counts do not.  Two counts per operation:

- Redis: a private redis-server runs under `valgrind --tool=callgrind`, collecting only
  inside fcallCommand and evalShaCommand (the functions' and the floor's whole work,
  their nested commands included, not the event loop or the socket reads and writes).
  Each operation runs on a fresh server once after its set-up alone and once after the
  set-up and n calls: the difference over n.
- client: the Python process making n calls runs under callgrind against a plain
  redis-server, once with n = 0: the difference over n (user space only: the kernel's
  send and receive are not counted).

The floor is benchmarks/engine_redis.py's: an EVALSHA of `return 1` with the same keys and
arguments as an add, through redis-py's generic `execute_command`; "direct floor" is the
same EVALSHA on the engine's own connection path (mi_server/engine/redis/direct.py).

    .venv/bin/python benchmarks/engine_redis_instructions.py [-n 2000]   # ~1 min
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from mi_server.engine import QueueSpec  # noqa: E402
from mi_server.engine.redis import RedisEngine  # noqa: E402
from mi_server.engine.redis.engine import NKEYS, queue_keys  # noqa: E402

VALUE = "v" * 20
PREFIX = "mqbench-cg"
SHA = hashlib.sha1(b"return 1").hexdigest()
SPECS = [QueueSpec("q"), QueueSpec("k", addmode=2)]
# operation -> (set-up, one call); both get (engine, i)
OPS = {
    "floor (EVALSHA return 1, redis-py)": (
        lambda e, n: e._client.script_load("return 1"),
        lambda e, i: e._client.execute_command("EVALSHA", SHA, NKEYS, *queue_keys(PREFIX, "q"),
                                               b"key00000", VALUE.encode())),
    "direct floor (the same, engine's path)": (
        lambda e, n: e._client.script_load("return 1"),
        lambda e, i: e._exec("EVALSHA", SHA, NKEYS, *queue_keys(PREFIX, "q"), b"key00000",
                             VALUE.encode())),
    "add (addmode 0)": (lambda e, n: None, lambda e, i: e.add("q", f"key{i:06d}", VALUE)),
    "fetch": (lambda e, n: [e.add("q", f"key{i:06d}", VALUE) for i in range(n)],
              lambda e, i: e.fetch("q")),
    "add (addmode 2, key replaced)": (
        lambda e, n: [e.add("k", f"key{i}", VALUE) for i in range(100)],
        lambda e, i: e.add("k", f"key{i % 100}", VALUE)),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    for _ in range(600):
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"no Redis at {url}")


def total(out: Path) -> int:
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no total in {out}")


def redis_side(op: str, n: int, size: int, workdir: Path) -> int:
    """Redis's instructions inside fcallCommand/evalShaCommand for op's set-up (for size
    calls) and n calls."""
    port = free_port()
    out = workdir / f"redis.{port}.out"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         "--toggle-collect=fcallCommand", "--toggle-collect=evalShaCommand",
         shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = wait_for(url)
    engine = RedisEngine.open(url, PREFIX, SPECS)
    setup, call = OPS[op]
    setup(engine, size)
    for i in range(n):
        call(engine, i)
    engine.close()
    try:
        client.shutdown(nosave=True)
    except redis.RedisError:
        pass  # the connection ends with the server
    proc.wait()
    return total(out)


def client_side(op: str, n: int, url: str, workdir: Path) -> int:
    """The client process's user-space instructions for op's set-up and n calls."""
    out = workdir / f"client.{n}.out"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, __file__, "--client", op, "--url", url, "-n", str(n)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return total(out)


def run_client(op: str, url: str, n: int) -> None:
    engine = RedisEngine.open(url, PREFIX, SPECS)
    setup, call = OPS[op]
    setup(engine, 3000)  # the same set-up whatever n (at most 3000), so that it cancels out
    for i in range(n):
        call(engine, i)
    engine.close()
    cleanup = redis.Redis.from_url(url)
    cleanup.delete(*cleanup.keys(f"{PREFIX}:*") or [b"-"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_client(args.client, args.url, args.n)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind")
    workdir = Path(tempfile.mkdtemp(prefix="mqbench-cg-"))
    port = free_port()
    plain = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                              str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                              "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(url).close()
    try:
        print(f"instructions per call, {args.n} calls (callgrind; Redis "
              f"{redis.Redis.from_url(url).info()['redis_version']}, redis-py "
              f"{redis.__version__})")
        print(f"{'operation':40} {'Redis':>9} {'client':>9}")
        for op in OPS:
            server = (redis_side(op, args.n, args.n, workdir)
                      - redis_side(op, 0, args.n, workdir)) / args.n
            client = (client_side(op, args.n, url, workdir)
                      - client_side(op, 0, url, workdir)) / args.n
            print(f"{op:40} {server:9.0f} {client:9.0f}", flush=True)
    finally:
        plain.kill()
        plain.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
