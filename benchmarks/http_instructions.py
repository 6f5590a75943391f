"""User-space instructions per HTTP request, counted by callgrind: ours and Kamailio.

`mi_http.py` measures server CPU time, which on this VM drifts up to 2x between runs
minutes apart (other work on its 2 CPUs, frequency, caches).  Instruction counts do not
drift: callgrind counts every instruction a process executes in user space.  This runs
each server under `valgrind --tool=callgrind` for several lifetimes: one answering
warm-up + n requests of every case (the peer's bench_client `--http-impl raw` for the
keep-alive cases, mi_http.py's `Connection: close` client for the close ones, 1 client),
and one per case answering 2n of that case and n of the others; the difference divided by
n is one request of that case, start-up, shutdown and the other cases cancelled out.
Counted processes:

- ours: `python -m mi_server -c <temp cfg>` with one HTTP worker: that worker (the
  supervisor and the FIFO listener do not take part in serving HTTP);
- kamailio: the peer's binary and kamailio.cfg under valgrind (fifo_instructions.py's set-up:
  one UDP and one TCP worker): its `tcp main` process (it accepts and hands each new
  connection to a worker) and its tcp receiver, as `core.psx` lists them.

What this does not count: the kernel (system calls, TCP, wake-ups), about half of the CPU
time per request here, nor cache misses.  So it is the stable figure for our own user-space
work and the peer's, not the CPU-time ratio itself (mi_http.py gives that, with its noise).

    .venv/bin/python benchmarks/http_instructions.py [-n 500] [--servers ours,kamailio]

Takes ~5-10 minutes with the default cases (everything runs 20-50x slower under valgrind).
Environment: ours is run with the environment of this script, so MQMI_HTTP_FASTPATH=0
counts the Python path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import (
    Kamailio,
    Ours,
    Rpc,
    _children,
    _sigterm_to_interrupt,
    close_bench,
    require_results,
    run_bench_client,
    shared_dir,
)
from fifo_instructions import START_TIMEOUT, CallgrindOut, KamailioUnderValgrind, OursUnderValgrind

MODES, OPS = ("keep", "close"), ("get_size", "get_sizes", "fetch")
KAMAILIO_URL = "http://127.0.0.1:18080/RPC"
METHODS = {server.label: {op: getattr(server, "m_" + op) for op in OPS}
           for server in (Ours, Kamailio)}


def serving_pids(label: str, srv) -> list[int]:
    """The processes of `srv` that serve HTTP (see the module docstring)."""
    root = srv.proc.pid
    if label == "ours":
        found = []
        todo = [root]
        while todo:
            pid = todo.pop()
            kids = _children(pid)
            todo.extend(kids)
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().startswith("mi-http"):
                        found.append(pid)
            except OSError:
                pass
        if len(found) != 1:
            raise SystemExit(f"ours: expected one HTTP worker process, found {found}")
        return found
    rpc = Rpc(KAMAILIO_URL)
    try:
        reply = rpc.call("core.psx")
    finally:
        rpc.close()
    pids = [p["PID"] for p in reply["result"] if "tcp" in p.get("DSC", "").lower()]
    if not pids:
        raise SystemExit(f"kamailio: no tcp processes in core.psx: {reply}")
    return pids


def run_case(shared: Path, srv, url: str, mode: str, op: str, n: int, warmup: int) -> None:
    method = METHODS[srv.label][op]
    params = None if op == "get_sizes" else ["q1"]
    if mode == "close":
        s = close_bench(shared, url, method, params, n, 1, warmup, srv.proc.pid, timeout=60)
    else:
        flags = ["--transport", "http", "--url", url, "--http-impl", "raw", "--method", method,
                 "-n", str(n), "-c", "1", "--warmup", str(warmup)]
        if params is not None:
            flags += ["--params", json.dumps(params)]
        s = run_bench_client(shared, flags, timeout=1800)
    require_results(s, f"{srv.label} {mode} {op}")


def lifetime(label: str, cases: list[tuple[str, str]], counts: list[int], work: Path,
             shared: Path, args) -> int:
    """Start `label` under callgrind, send counts[i] requests of cases[i] (after a
    warm-up each), stop it: the instructions its serving processes executed in all."""
    cg = CallgrindOut(Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work)))
    # the same prefill in every lifetime (ours adds it over HTTP, through the counted
    # worker), enough for the lifetime with the most fetches
    fetch_cases = sum(1 for _, o in cases if o == "fetch")
    prefill = (len(cases) + 1) * args.warmup + (fetch_cases + 1) * args.n + 100
    if label == "ours":
        srv = OursUnderValgrind(prefill, cg)
    else:
        srv = KamailioUnderValgrind(shared, prefill, cg)
    try:
        srv.start()
        url = srv.url if label == "ours" else KAMAILIO_URL
        if label == "kamailio":
            _wait_http(url)
        pids = serving_pids(label, srv)
        for (mode, op), n in zip(cases, counts, strict=True):
            run_case(shared, srv, url, mode, op, n, args.warmup)
    finally:
        srv.stop()
    return sum(cg.total(pid) for pid in pids)


def _wait_http(url: str) -> None:
    rpc = Rpc(url)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            rpc.call("core.psx")
            return
        except (OSError, ValueError):
            rpc.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            rpc.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=500,
                    help="requests told apart: lifetimes with n and 2n of a case compared")
    ap.add_argument("--warmup", type=int, default=50, help="untimed requests per case")
    ap.add_argument("--servers", default="ours,kamailio")
    ap.add_argument("--cases", default="keep:get_size,keep:get_sizes,keep:fetch,close:get_size",
                    help="mode:op list; modes keep, close; ops get_size, get_sizes, fetch")
    ap.add_argument("--shared", default=None)
    args = ap.parse_args(argv)
    shared = shared_dir(args.shared)
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    os.environ["PYTHONHASHSEED"] = "0"  # the same str hashes, dict layouts in every run
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    cases = [tuple(c.strip().split(":")) for c in args.cases.split(",") if c.strip()]
    for case in cases:
        if len(case) != 2 or case[0] not in MODES or case[1] not in OPS:
            raise SystemExit(f"--cases: mode:op with mode in {MODES} and op in {OPS}, "
                             f"not {':'.join(case)!r}")
    labels = [s.strip() for s in args.servers.split(",") if s.strip()]
    results: dict[str, dict[str, float]] = {label: {} for label in labels}
    work = Path(tempfile.mkdtemp(prefix="mqmi-cg-"))
    names = [f"{m} {o}" for m, o in cases]
    try:
        for label in labels:
            base = lifetime(label, cases, [args.n] * len(cases), work, shared, args)
            print(f"#   {label:8} base {base:,} instructions ({args.n} of each case)",
                  flush=True)
            for k, name in enumerate(names):
                counts = [2 * args.n if i == k else args.n for i in range(len(cases))]
                total = lifetime(label, cases, counts, work, shared, args)
                per = (total - base) / args.n
                results[label][name] = per
                print(f"#   {label:8} {name:14} {per:10,.0f} instructions/request "
                      f"({total:,} with {2 * args.n} of it)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, names, args)
    return 0


def print_table(results: dict[str, dict[str, float]], cases: list[str], args) -> None:
    labels = list(results)
    fast = os.environ.get("MQMI_HTTP_FASTPATH", "1").strip() != "0"
    print(f"\n## User-space instructions per HTTP request (callgrind, {args.n} requests "
          f"per case told apart, 1 client; ours {'with' if fast else 'without'} the "
          "compiled fast path)\n")
    both = "ours" in results and "kamailio" in results
    print("| case | " + " | ".join(labels) + (" | ours/kamailio |" if both else " |"))
    print("|---" * (1 + len(labels) + both) + "|")
    for case in cases:
        row = f"| {case} | " + " | ".join(f"{results[x][case]:,.0f}" for x in labels)
        if both:
            row += f" | {results['ours'][case] / results['kamailio'][case]:.2f}x"
        print(row + " |")
    print("\n* Counted in the processes that serve HTTP only (ours: the HTTP worker; "
          "Kamailio: tcp main and its tcp receiver), user space only: no kernel time, no "
          "cache effects (see the module docstring).")


if __name__ == "__main__":
    sys.exit(main())
