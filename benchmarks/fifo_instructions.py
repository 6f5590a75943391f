"""User-space instructions per FIFO request, counted by callgrind: ours, Kamailio, the floor.

`mi_fifo.py` measures server CPU time, which on this VM drifts up to 2x between runs
minutes apart.  Instruction counts do not drift: callgrind counts every instruction a
process executes in user space, the same total for the same binary, inputs and
environment whatever else the machine is doing (here within about 1 % from run to run: a
listener's once-a-second path check and the odd wait for a late reader depend on time).
This script runs each FIFO server under `valgrind --tool=callgrind` twice per case: one
lifetime answering warm-up + n requests, one answering warm-up + 2n (the peer's
bench_client with mi_fifo.py's flags, 1 client), and reads the instructions of the process
that served the FIFO over its whole life; the difference divided by n is the cost of one
request, start-up and shutdown cancelled out.  (callgrind_control cannot zero counters
here: valgrind gives a forked child, such as a FIFO process, no gdbserver to talk to.)
Servers:

- ours: `python -m mi_server -c <temp cfg>` (its FIFO listener process);
- kamailio: the peer's binary and kamailio.cfg under valgrind, started with start.sh's
  flags but less shared memory (128 MB) and one UDP and one TCP worker (its jsonrpcs FIFO
  process); refused if the peer is already running.  Its pid file is kept in our own temp
  directory, so a mi_fifo.py started meanwhile does not take it for the peer (it fails to
  start the peer, whose ports are taken, instead of measuring a server under valgrind);
- floor: benchmarks/fifo_floor.py's do-nothing Python listener.

What this does not count: the kernel (system calls, wake-ups, page faults), about half of
the CPU time per request here (ours and the floor make the same 5 system calls per
request, Kamailio 10), and cache misses: a Python process that slept between requests
runs its instructions slower than a warm loop would.  So it is the figure to track changes
of our own Python path with, and the part of the CPU-time gap that is ours to close, not
the CPU-time ratio itself.

    .venv/bin/python benchmarks/fifo_instructions.py [-n 1000] [--servers ours,kamailio,floor]
    .venv/bin/python benchmarks/fifo_instructions.py --in-process   # ours only, ~80 s

`--in-process` counts our listener's path alone, for judging a change quickly, both ways:
"compiled", the C fast path's loop (mi_fifo/_fastpath.c) reading each request from a pipe,
as served when the extension is built; "python", the request fed to the framer and
dispatched exactly as the listener does without it.  The reply goes to a reply FIFO that
the same process holds open for reading and drains (no client, no wake-ups; the figure is
a few thousand instructions below the served one).

Takes ~2-5 minutes with the two default cases (everything runs 20-50x slower under valgrind).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    REPO,
    SHARED_HELP,
    Kamailio,
    Ours,
    _sigterm_to_interrupt,
    fifo_flags,
    require_results,
    run_bench_client,
    shared_dir,
    wait_for_fifo_reader,
)
from fifo_floor import Floor

VALGRIND = ["valgrind", "--tool=callgrind", "--vgdb=no", "-q"]
START_TIMEOUT = 300.0  # seconds: a server starting under valgrind
STOP_TIMEOUT = 120.0   # seconds: its processes exiting and writing their callgrind files
MODES, OPS = ("fresh", "reuse"), ("get_size", "fetch")


class CallgrindOut:
    """Where one server lifetime's callgrind files go: `<dir>/cg.<pid>` per process, written
    when the process exits (also on SIGTERM)."""

    def __init__(self, work: Path) -> None:
        self.dir = work
        self.pattern = str(work / "cg.%p")

    def total(self, pid: int) -> int:
        """Every instruction process `pid` executed, from its start to its exit."""
        path = self.dir / f"cg.{pid}"
        deadline = time.monotonic() + 60
        while True:  # written at exit, totals last; the parent may reap it first
            try:
                return _totals_line(path)
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no complete callgrind output {path}") from None
                time.sleep(0.2)


def _totals_line(path: Path) -> int:
    """The `totals:` figure of a callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals line in {path}")


class OursUnderValgrind(Ours):
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(self, prefill: int, cg: CallgrindOut) -> None:
        cmd = [*VALGRIND, f"--callgrind-out-file={cg.pattern}",
               sys.executable, "-m", "mi_server"]
        super().__init__(1, prefill, "64M", cmd)


class KamailioUnderValgrind:
    """The peer's binary and cfg as start.sh runs them, under valgrind, with the peer's
    FIFO and reply directory (common.Kamailio's)."""

    label = "kamailio"
    fifo_dialect = "kamailio"
    m_fetch, m_get_size = "mqueue.fetch", "mqueue.get_size"

    def __init__(self, shared: Path, prefill: int, cg: CallgrindOut) -> None:
        self.peer = Kamailio(shared, prefill)
        self.cfg = self.peer.dir / "kamailio.cfg"
        self.log = cg.dir / "kamailio.log"
        self.fifo = self.peer.fifo
        self.reply_dir = self.peer.reply_dir
        self.run_dir = Path(self.fifo).parent
        self.pidfile = str(cg.dir / "kamailio.pid")
        self.prefill = prefill
        self.cg = cg
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.peer.running():
            raise SystemExit(f"the kamailio peer is running (pid {self.peer.pid()}): stop it "
                             f"first ({self.peer.dir}/stop.sh)")
        if shutil.which("kamailio") is None:
            raise SystemExit(f"no kamailio binary: run {self.peer.dir}/start.sh once "
                             "(it installs the Debian package)")
        self.run_dir.mkdir(exist_ok=True)
        Path(self.fifo).unlink(missing_ok=True)
        cmd = [*VALGRIND, f"--callgrind-out-file={self.cg.pattern}",
               shutil.which("kamailio"), "-f", str(self.cfg), "-DD", "-E", "-P", self.pidfile,
               "-m", "128", "-M", "16", "-A", f"PREFILL_N={self.prefill}", "-A", "PRETTY=1",
               "-A", "NCHILDREN=1", "-A", "NTCPCHILDREN=1"]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while b"mqueue peer: prefilled" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError("kamailio under valgrind did not come up; its log ends:\n"
                                   + "\n".join(tail))
            time.sleep(0.5)

    def refill(self, q: str, target: int) -> int:
        return target  # prefilled at start with enough for every fetch run

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        Path(self.fifo).unlink(missing_ok=True)  # stop.sh's peer would re-create it anyway


class FloorUnderValgrind(Floor):
    """benchmarks/fifo_floor.py's listener, run as its own process under valgrind (not
    forked from this one, which valgrind does not run)."""

    def __init__(self, cg: CallgrindOut) -> None:
        super().__init__()
        self.cg = cg
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        os.mkfifo(self.fifo, 0o600)
        code = ("import sys, os; sys.path.insert(0, sys.argv[1]); import fifo_floor; "
                "fifo_floor.serve(sys.argv[2], os.fsencode(sys.argv[3]))")
        self.proc = subprocess.Popen(
            [*VALGRIND, f"--callgrind-out-file={self.cg.pattern}",
             sys.executable, "-c", code, str(REPO / "benchmarks"), self.fifo,
             self.reply_dir], stdin=subprocess.DEVNULL, start_new_session=True)

    def pid(self) -> int:
        return self.proc.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: callgrind still writes its counts
            self.proc.wait()
        super().stop()


def make_server(label: str, cg: CallgrindOut, shared: Path, prefill: int):
    if label == "ours":
        return OursUnderValgrind(prefill, cg)
    if label == "kamailio":
        return KamailioUnderValgrind(shared, prefill, cg)
    if label == "floor":
        return FloorUnderValgrind(cg)
    raise SystemExit(f"--servers: ours, kamailio, floor; not {label!r}")


def lifetime(label: str, mode: str, op: str, n: int, work: Path, shared: Path,
             args) -> int:
    """Start `label` under callgrind, send warm-up + `n` requests of one case, stop it:
    the instructions its FIFO process executed in its whole life."""
    cg = CallgrindOut(Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work)))
    srv = make_server(label, cg, shared, prefill=args.warmup + n + 100)
    try:
        srv.start()
        pid = wait_for_fifo_reader(srv.proc.pid, srv.fifo, srv.label, START_TIMEOUT)
        s = run_bench_client(shared, fifo_flags(srv, op, n, 1, args.warmup, mode))
        require_results(s, f"{label} {mode} {op}")
    finally:
        srv.stop()
    return cg.total(pid)


def _fastpath():
    """The package mi_fifo.fastpath (this script's directory holds benchmarks/mi_fifo.py,
    which would shadow the package)."""
    sys.path.insert(0, str(REPO))
    from mi_fifo import fastpath

    return fastpath


def serve_in_process(n: int, method: str, prefill: int, path: str) -> None:
    """--loop: `n` requests through our listener's request path, in this process (run under
    callgrind by `in_process`), q1 holding `prefill` items first.  `path`: "compiled" (the
    C fast path's loop over a pipe) or "python" (the framer, dispatch and reply code)."""
    import types

    fastpath = _fastpath()
    from mi_fifo.listener import READ_SIZE, _Listener
    from mi_server.engine import Arena
    from mi_server.engine.spec import QueueSpec
    from mi_server.mi import build_core
    from mi_server.mi.context import MIContext

    work = Path(tempfile.mkdtemp(prefix="mqmi-loop-"))
    arena = Arena.create(f"mqmi-loop-{os.getpid()}", 1 << 24, [QueueSpec("q1")])
    try:
        for i in range(prefill):
            arena.add("q1", f"key{i}", "value")
        core = build_core(MIContext(engine=arena, started=time.time(), argv=[],
                                    processes=list, stop=lambda: None))
        cfg = types.SimpleNamespace(path=str(work / "fifo"), mode=0o600, user=None,
                                    group=None, reply_dir=f"{work}/", max_request=65536,
                                    idle_timeout=1.0)
        lst = _Listener(cfg, core.handle, core.scan_value, core.stage, core.finish,
                        core.stage_checked)
        lst.ident = (0, 0)  # no FIFO of our own to refuse
        os.mkfifo(work / "r1")
        reply_fd = os.open(work / "r1", os.O_RDONLY | os.O_NONBLOCK)
        request = b':r1:{"jsonrpc":"2.0","method":"%s","params":["q1"],"id":"1"}\n' % (
            method.encode())
        read, write, monotonic = os.read, os.write, time.monotonic
        if path == "compiled":
            # the C loop over a non-blocking pipe: it serves the request, then finds
            # nothing more to read and returns
            serve = fastpath.load()
            if serve is None:
                raise SystemExit("the compiled fast path is not built or turned off")
            pipe_r, pipe_w = os.pipe()
            os.set_blocking(pipe_r, False)
            prefix, slow = lst.reply_prefix, lst.write_slow
            for _ in range(n):
                write(pipe_w, request)
                # the arguments the listener passes (mi_fifo.listener, _Loop)
                if serve(pipe_r, READ_SIZE, prefix, cfg.max_request, lst.ident,
                         core.stage_checked, core.finish, slow):
                    raise SystemExit(f"{method}: not taken by the compiled path")
                if b'"result"' not in read(reply_fd, 4096):
                    raise SystemExit(f"{method}: no result reply")
            return
        feed, dispatch = lst.framer.feed, lst.dispatch
        for _ in range(n):
            dispatch(feed(request, monotonic()))
            if b'"result"' not in read(reply_fd, 4096):
                raise SystemExit(f"{method}: no result reply")
    finally:
        arena.close()
        arena.unlink()
        shutil.rmtree(work, ignore_errors=True)


def in_process(args) -> int:
    """Our listener path alone under callgrind: (2n run - n run) / n per method."""
    work = Path(tempfile.mkdtemp(prefix="mqmi-cg-"))
    try:
        fastpath = _fastpath()
        for path in ("compiled", "python"):
            if path == "compiled" and fastpath.load() is None:
                print(f"compiled: skipped, the fast path is not built or turned off "
                      f"({fastpath.ENV}=0)", flush=True)
                continue
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000,
                    help="requests told apart: lifetimes of n and 2n requests are compared")
    ap.add_argument("--warmup", type=int, default=100, help="requests in every lifetime")
    ap.add_argument("--servers", default="ours,kamailio,floor")
    ap.add_argument("--cases", default="fresh:get_size,fresh:fetch",
                    help="mode:op list; modes fresh, reuse; ops get_size, fetch")
    ap.add_argument("--shared", default=None, metavar="DIR", help=SHARED_HELP)
    ap.add_argument("--in-process", action="store_true",
                    help="count our listener's path alone, in one process (see above)")
    ap.add_argument("--loop", nargs=4, metavar=("N", "METHOD", "PREFILL", "PATH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loop:
        serve_in_process(int(args.loop[0]), args.loop[1], int(args.loop[2]), args.loop[3])
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian package valgrind)")
    os.environ["PYTHONHASHSEED"] = "0"  # the same str hashes, dict layouts in every run
    if args.in_process:
        return in_process(args)
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)  # stop the servers on SIGTERM too
    shared = shared_dir(args.shared)
    cases = [tuple(c.strip().split(":")) for c in args.cases.split(",") if c.strip()]
    for case in cases:
        if len(case) != 2 or case[0] not in MODES or case[1] not in OPS:
            raise SystemExit(f"--cases: mode:op with mode in {MODES} and op in {OPS}, "
                             f"not {':'.join(case)!r}")
    labels = [s.strip() for s in args.servers.split(",") if s.strip()]
    results: dict[str, dict[str, float]] = {label: {} for label in labels}
    work = Path(tempfile.mkdtemp(prefix="mqmi-cg-"))
    try:
        for mode, op in cases:
            for label in labels:
                small = lifetime(label, mode, op, args.n, work, shared, args)
                large = lifetime(label, mode, op, 2 * args.n, work, shared, args)
                per = (large - small) / args.n
                results[label][f"{mode} {op}"] = per
                print(f"#   {label:8} {mode} {op:8} {per:10,.0f} instructions/request "
                      f"({small:,} with {args.n} requests, {large:,} with {2 * args.n})",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, [f"{m} {o}" for m, o in cases], args)
    return 0


def print_table(results: dict[str, dict[str, float]], cases: list[str], args) -> None:
    labels = list(results)
    print(f"\n## User-space instructions per FIFO request (callgrind, {args.n} requests "
          "per case, 1 client)\n")
    head = "| case | " + " | ".join(labels)
    ratios = [(a, b) for a, b in (("ours", "kamailio"), ("ours", "floor"),
                                  ("kamailio", "floor")) if a in results and b in results]
    head += "".join(f" | {a}/{b}" for a, b in ratios)
    print(head + " |")
    print("|---" * (1 + len(labels) + len(ratios)) + "|")
    for case in cases:
        row = f"| {case} | " + " | ".join(f"{results[x][case]:,.0f}" for x in labels)
        row += "".join(f" | {results[a][case] / results[b][case]:.2f}x" for a, b in ratios)
        print(row + " |")
    print("\n* Counted in the process that serves the FIFO only (ours: the FIFO listener; "
          "Kamailio: its jsonrpcs FIFO process), user space only: no kernel time, no cache "
          "effects (see the module docstring).")


if __name__ == "__main__":
    sys.exit(main())
