"""The floor of a FIFO MI server written in Python: what answering costs with no work at all.

A minimal listener (poll, read the request, open the reply FIFO, fstat it, write a canned
reply, close) is measured with the same client and flags as benchmarks/mi_fifo.py
(bench_client.py, opensips dialect, fresh reply FIFO per request, 1 client). It parses no
JSON, runs no command and touches no queue, so its server CPU per request is the least any
Python implementation of the mi_fifo protocol can cost on this machine: compare it with our
listener's and Kamailio's figures from mi_fifo.py.

    .venv/bin/python benchmarks/fifo_floor.py [-n 5000] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import statistics
import tempfile
from pathlib import Path

from common import run_bench_client, shared_dir

_NAME = re.compile(rb"\s*:([^:]*):")
_REPLY = b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":0}},"id":1}\n'


def serve(fifo: str, reply_dir: bytes) -> None:
    """The do-nothing listener: the protocol's system calls and nothing else."""
    fd = os.open(fifo, os.O_RDWR)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        poller.poll()
        data = os.read(fd, 65536)
        match = _NAME.match(data)
        if match is None:
            continue
        reply = os.open(reply_dir + match.group(1),
                        os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY)
        os.fstat(reply)
        os.write(reply, _REPLY)
        os.close(reply)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()
    shared = shared_dir(args.shared)
    work = Path(tempfile.mkdtemp(prefix="mqfloor", dir="/tmp"))
    fifo = work / "fifo"
    os.mkfifo(fifo, 0o600)
    pid = os.fork()
    if pid == 0:
        try:
            serve(str(fifo), os.fsencode(work) + b"/")
        finally:
            os._exit(0)
    try:
        figures = []
        for _ in range(args.reps):
            s = run_bench_client(shared, [
                "--transport", "fifo", "--fifo", str(fifo), "--reply-dir", f"{work}/",
                "--fifo-dialect", "opensips", "--method", "mq_get_size", "--params",
                '["q1"]', "-n", str(args.n), "--warmup", "20", "--server-pid", str(pid)])
            figures.append(s["server_cpu_us_per_req"])
            print(f"# run: {s['server_cpu_us_per_req']} us/request, {s['completed']} "
                  f"completed, outcomes {s['outcomes']}")
        print(f"do-nothing Python FIFO listener: server CPU {statistics.median(figures):.1f} "
              f"us/request (median of {args.reps} runs of {args.n})")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
