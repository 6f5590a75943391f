"""User-space instructions per datagram request in our listener, counted by callgrind.

`mi_datagram.py` measures server CPU time, which drifts with the machine's load;
instruction counts do not (see fifo_instructions.py).  This script runs our datagram
listener's request path in one process under `valgrind --tool=callgrind`, once with n and
once with 2n requests, and divides the difference by n: start-up and shutdown cancel out.
Both ways: "compiled", the C fast path's loop (mi_server/datagram/_fastpath.c), and
"python", `socket.recvfrom` and `Listener.serve` as the listener runs them without it.

The requests come from a UDP client socket of the same process on 127.0.0.1, in rounds of
BATCH datagrams (then its replies are read), so that the client's own work is the same for
both ways; a compiled round ends with an empty datagram, which the C loop hands back.  What
this does not count: the kernel (the listener makes one recvfrom and one sendto per
request either way) and the wake-ups of a process that slept between requests.

    .venv/bin/python benchmarks/datagram_instructions.py [-n 1000]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VALGRIND = ["valgrind", "--tool=callgrind", "--vgdb=no", "-q"]
BATCH = 50  # datagrams per round: well within the sockets' receive buffers


def _totals_line(path: Path) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals line in {path}")


def serve_in_process(n: int, method: str, prefill: int, path: str) -> None:
    """--loop: `n` requests through the listener's path in this process (see above)."""
    sys.path.insert(0, str(REPO))
    from mi_server.datagram import fastpath
    from mi_server.datagram.protocol import DatagramProtocol
    from mi_server.datagram.server import Listener
    from mi_server.engine import Arena
    from mi_server.engine.spec import QueueSpec
    from mi_server.mi import build_core
    from mi_server.mi.context import MIContext
    from mi_server.mi.core import TOO_LARGE

    if path == "compiled" and fastpath.load() is None:
        raise SystemExit("the compiled fast path is not built or turned off")
    if path == "python":
        os.environ[fastpath.ENV] = "0"
    arena = Arena.create(f"mqmi-dgloop-{os.getpid()}", 1 << 24, [QueueSpec("q1")])
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(prefill):
            arena.add("q1", f"key{i}", "value")
        core = build_core(MIContext(engine=arena, started=time.time(), argv=[],
                                    processes=list, stop=lambda: None))
        budget = 65457
        protocol = DatagramProtocol(core.stage_held, core.finish, TOO_LARGE, budget,
                                    checked=core.stage_checked_held)
        server.bind(("127.0.0.1", 0))
        client.bind(("127.0.0.1", 0))
        target = server.getsockname()
        lst = Listener(server, protocol, budget)
        request = b'{"jsonrpc":"2.0","method":"%s","params":["q1"],"id":"1"}' % (
            method.encode())
        send, recv = client.sendto, client.recv
        if path == "compiled":
            p = lst.protocol
            args = (lst.read_fd, server.fileno(), lst.read_size,
                    (p.checked, p.outcome, lst.drop, lst.settle_failed), lst.stop_flag)
            serve = lst.fast
            for done in range(0, n, BATCH):
                k = min(BATCH, n - done)
                for _ in range(k):
                    send(request, target)
                send(b"", target)  # handed back: the round's end
                got = serve(*args)
                if type(got) is not tuple or got[0] != b"":
                    raise SystemExit(f"{method}: the compiled path did not take it: {got!r}")
                for _ in range(k):
                    if b'"result"' not in recv(65536):
                        raise SystemExit(f"{method}: no result reply")
            return
        recvfrom, size, answer = lst.reader.recvfrom, lst.read_size, lst.serve
        for done in range(0, n, BATCH):
            k = min(BATCH, n - done)
            for _ in range(k):
                send(request, target)
            for _ in range(k):
                answer(*recvfrom(size))  # the listener loop's two calls
            for _ in range(k):
                if b'"result"' not in recv(65536):
                    raise SystemExit(f"{method}: no result reply")
    finally:
        server.close()
        client.close()
        arena.close()
        arena.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000,
                    help="requests told apart: runs of n and 2n requests are compared")
    ap.add_argument("--loop", nargs=4, metavar=("N", "METHOD", "PREFILL", "PATH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loop:
        serve_in_process(int(args.loop[0]), args.loop[1], int(args.loop[2]), args.loop[3])
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    os.environ["PYTHONHASHSEED"] = "0"  # the same str hashes, dict layouts in every run
    work = Path(tempfile.mkdtemp(prefix="mqmi-dgcg-"))
    try:
        for path in ("compiled", "python"):
            for method in ("mq_get_size", "mq_fetch"):
                # the same prefill in both runs, so that the difference holds no mq_add
                prefill = 2 * args.n if method == "mq_fetch" else 0
                totals = []
                for n in (args.n, 2 * args.n):
                    out = work / f"{path}.{method}.{n}"
                    subprocess.run([*VALGRIND, f"--callgrind-out-file={out}", sys.executable,
                                    __file__, "--loop", str(n), method, str(prefill), path],
                                   check=True, cwd=REPO)
                    totals.append(_totals_line(out))
                print(f"{path:8} {method:12} {(totals[1] - totals[0]) / args.n:10,.0f} "
                      f"instructions/request (in process; {totals[0]:,} with {args.n}, "
                      f"{totals[1]:,} with {2 * args.n})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
