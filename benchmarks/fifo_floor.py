"""The floor of a FIFO MI server written in Python: what answering costs with no work at all.

A minimal listener (a blocking read of the request, open the reply FIFO, fstat it, write a
canned reply, close) is measured with the same client and flags as benchmarks/mi_fifo.py
(bench_client.py, opensips dialect, fresh reply FIFO per request, 1 client). It parses no
JSON, runs no command and touches no queue, so its server CPU per request is the least any
Python implementation of the mi_fifo protocol can cost on this machine.  mi_fifo.py runs
this same listener as a third server, interleaved with ours and Kamailio (`Floor`), which
is the comparison to quote on a machine whose speed drifts; this script measures it alone.

`MinimalMI` is a second reference for mi_fifo.py (`--minimal-mi`): the least a listener
doing real MI work can do for `mq_get_size` / `mq_fetch` `["q1"]`: decode the JSON (the C
scanner), check the version and method, ask our engine (a real shared-memory arena), write
the reply with one f-string, open, fstat, write, close.  No framing beyond a regex, no
other command, no error replies, no JSON-RPC rules, no bounded waits: not a server anyone
should run, but what the protocol's work costs in this interpreter.

    .venv/bin/python benchmarks/fifo_floor.py [-n 5000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from common import SHARED_HELP, fifo_flags, require_results, run_bench_client, shared_dir

from mi_server.engine import Arena
from mi_server.engine.spec import QueueSpec
from mi_server.mi.jsonvalues import JObject

# a request header: `:name:{` (the names bench_client makes have no quote or brace, so this
# never matches inside a JSON body); several requests can arrive in one read (4 clients)
_HEAD = re.compile(rb':([^:{}"]*):\{')
_REPLY = b'{"jsonrpc":"2.0","result":{"Queue":{"name":"q1","size":0}},"id":1}\n'


_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY


def _open_reply(path: bytes) -> int:
    """The reply FIFO opened for writing; if nobody reads it yet (rare with bench_client),
    tried again for up to 0.1 s, as ours waits; -1 when it never opened."""
    for attempt in range(201):
        try:
            return os.open(path, _FLAGS)
        except OSError:
            if attempt < 200:
                time.sleep(0.0005)
    return -1


def serve(fifo: str, reply_dir: bytes) -> None:
    """The do-nothing listener: the protocol's system calls and nothing else."""
    fd = os.open(fifo, os.O_RDWR)  # blocking: it sleeps in read(), as ours and Kamailio do
    while True:
        data = os.read(fd, 65536)
        for match in _HEAD.finditer(data):
            reply = _open_reply(reply_dir + match.group(1))
            if reply < 0:
                continue
            os.fstat(reply)
            os.write(reply, _REPLY)
            os.close(reply)


def serve_minimal_mi(fifo: str, reply_dir: bytes, arena: Arena) -> None:
    """MinimalMI's listener (see the module docstring)."""
    scan = json.JSONDecoder(object_pairs_hook=JObject, strict=False).scan_once
    quote = json.encoder.encode_basestring
    size, fetch = arena.size, arena.fetch
    fd = os.open(fifo, os.O_RDWR)
    while True:
        data = os.read(fd, 65536)
        text = data.decode("latin-1")
        for match in _HEAD.finditer(data):
            doc = dict(scan(text, match.end() - 1)[0])
            if doc.get("jsonrpc") != "2.0":
                continue
            rid = doc.get("id")
            rid = quote(rid) if type(rid) is str else str(rid)
            method, queue = doc.get("method"), doc["params"][0]
            if method == "mq_get_size":
                result = f'{{"Queue":{{"name":{quote(queue)},"size":{size(queue)}}}}}'
            elif method == "mq_fetch":
                key, value = fetch(queue)  # MinimalMI.refill keeps q1 from running dry
                result = f'{{"Item":{{"key":{quote(key)},"value":{quote(value)}}}}}'
            else:
                continue
            reply = f'{{"jsonrpc":"2.0","result":{result},"id":{rid}}}\n'.encode()
            out = _open_reply(reply_dir + match.group(1))
            if out < 0:
                continue
            if os.fstat(out).st_nlink == 1:
                os.write(out, reply)
            os.close(out)


class Floor:
    """The do-nothing listener as a server of benchmarks/mi_fifo.py (common.Server's FIFO
    part): every request gets the canned reply, so fetch cases need no refill."""

    label = "floor"
    fifo_dialect = "opensips"
    m_fetch = "mq_fetch"
    m_get_size = "mq_get_size"

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="mqfloor", dir="/tmp"))
        self.fifo = str(self.work / "fifo")
        self.reply_dir = f"{self.work}/"
        self.pidfile = str(self.work / "pid")
        self.child = 0

    def start(self) -> None:
        os.mkfifo(self.fifo, 0o600)
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
                self.serve()
            finally:
                os._exit(0)
        self.child = pid
        Path(self.pidfile).write_text(f"{pid}\n")

    def serve(self) -> None:
        """What the child process runs."""
        serve(self.fifo, os.fsencode(self.reply_dir))

    def pid(self) -> int:
        return self.child

    def refill(self, q: str, target: int) -> int:
        return target

    def stop(self) -> None:
        if self.child:
            os.kill(self.child, signal.SIGKILL)
            os.waitpid(self.child, 0)
            self.child = 0
        shutil.rmtree(self.work, ignore_errors=True)


class MinimalMI(Floor):
    """serve_minimal_mi as a server of benchmarks/mi_fifo.py, over an arena this process
    creates and refills (the child answers from the same shared memory)."""

    label = "minimal"

    def __init__(self) -> None:
        super().__init__()
        self.arena = Arena.create(f"mqmi-minimal-{os.getpid()}", 64 << 20, [QueueSpec("q1")])
        self.serial = 0

    def serve(self) -> None:
        serve_minimal_mi(self.fifo, os.fsencode(self.reply_dir), self.arena)

    def refill(self, q: str, target: int) -> int:
        while self.arena.size(q) < target:
            self.serial += 1
            self.arena.add(q, f"rk{self.serial}", f"rv{self.serial}")
        return self.arena.size(q)

    def stop(self) -> None:
        super().stop()
        self.arena.close()
        self.arena.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shared", default=None, metavar="DIR", help=SHARED_HELP)
    args = ap.parse_args()
    shared = shared_dir(args.shared)
    floor = Floor()
    try:
        floor.start()
        figures = []
        for _ in range(args.reps):
            s = run_bench_client(shared, fifo_flags(floor, "get_size", args.n, 1, 20, "fresh",
                                                    pidfile=floor.pidfile))
            require_results(s, "floor run")
            figures.append(s["server_cpu_us_per_req"])
            print(f"# run: {s['server_cpu_us_per_req']} us/request, {s['completed']} "
                  f"completed, outcomes {s['outcomes']}")
        print(f"do-nothing Python FIFO listener: server CPU {statistics.median(figures):.1f} "
              f"us/request (median of {args.reps} runs of {args.n})")
    finally:
        floor.stop()


if __name__ == "__main__":
    main()

