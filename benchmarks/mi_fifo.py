"""MI over the FIFO: our server vs the Kamailio 5.6 peer, same client, interleaved.

One command: starts both servers (ours from a temp config with a private FIFO and reply
directory; the peer with <shared>/peers/kamailio/start.sh, see --shared), prefills them,
runs every case REPS times in the order ours, kamailio, ours, kamailio..., prints one
table, stops both (also on Ctrl-C / errors).

Client: the peer's bench_client.py `--transport fifo`; ours with `--fifo-dialect opensips`
(`:reply_name:{json}`), Kamailio with `--fifo-dialect kamailio` (`"reply_name"` member).
Cases: fetch / get_size of q1, a fresh reply FIFO per request (mkfifo + unlink, what
opensips-cli and shell scripts do) and `--reuse-reply-fifo`, 1 and 4 client processes.
Unless --no-floor, a third server runs interleaved with the two: fifo_floor.py's
do-nothing Python listener (the protocol's system calls, a canned reply), the least any
Python implementation can cost here; its figures are printed after the table.  With
--minimal-mi, one more: fifo_floor.py's minimal MI listener (decode, our engine, reply,
nothing else), the least a Python listener doing the MI work can cost.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Results,
    Servers,
    apply_quick,
    client_counts,
    common_args,
    fifo_flags,
    run_bench_client,
    shared_dir,
    wait_for_fifo_reader,
)
from fifo_floor import Floor, MinimalMI  # noqa: E402

OPS = ("fetch", "get_size")
MODES = ("fresh", "reuse")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("-n", type=int, default=5_000,
                    help="requests per run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20,
                    help="untimed requests per client before each run (default %(default)s)")
    ap.add_argument("--modes", default="fresh,reuse",
                    help="reply FIFO modes, comma separated (default %(default)s)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="do not run the do-nothing Python listener as a third server")
    ap.add_argument("--minimal-mi", action="store_true",
                    help="also run fifo_floor.py's minimal MI listener (real decode, engine "
                         "and reply, nothing else) as one more server")
    ap.add_argument("--pin-cpu", type=int, metavar="N",
                    help="run each server's FIFO-serving process and the client on CPU N "
                         "alone: the same placement for every server, so that the cost "
                         "of waking the client on another CPU (most of the drift on a VM) "
                         "is taken out; default: the scheduler places them")
    args = ap.parse_args(argv)
    apply_quick(args)
    if args.quick:
        args.n, args.warmup = 300, 5
    return args


def run_case(shared, srv, mode, op, c, args):
    if op == "fetch":
        srv.refill("q1", max(args.prefill, args.n + c * args.warmup + 10))
    flags = fifo_flags(srv, op, args.n, c, args.warmup, mode, pidfile=srv.pidfile)
    return run_bench_client(shared, flags, cpu=args.pin_cpu)


class Pins:
    """--pin-cpu: each server's FIFO-serving process on one CPU; all put back at the end
    (a Kamailio peer that was already running is left running)."""

    def __init__(self) -> None:
        self.pinned: dict[int, set[int]] = {}  # pid -> the CPUs it had

    def pin(self, srv, cpu: int) -> None:
        pid = wait_for_fifo_reader(srv.pid(), srv.fifo, srv.label, 30.0)
        self.pinned[pid] = os.sched_getaffinity(pid)
        os.sched_setaffinity(pid, {cpu})

    def restore(self) -> None:
        for pid, cpus in self.pinned.items():
            try:
                os.sched_setaffinity(pid, cpus)
            except OSError:
                pass  # stopped already


REFERENCES = {
    "floor": "floor = a do-nothing Python listener (benchmarks/fifo_floor.py) interleaved "
             "with the servers; the least a Python mi_fifo server can cost here",
    "minimal": "minimal = fifo_floor.py's minimal MI listener (C JSON decode, version and "
               "method check, our engine, one f-string reply; nothing else), interleaved; "
               "the least a Python listener doing the MI work can cost here",
}


def listener_note(ours) -> str:
    """Which compiled parts our FIFO listener serves with, read off the running listener:
    the extensions mapped in it, and their switches in its environment
    (mi_fifo/fastpath.py, mi_server/engine/shm/speedups.py)."""
    pid = wait_for_fifo_reader(ours.pid(), ours.fifo, ours.label, 30.0)
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(e.partition(b"=")[::2] for e in f.read().split(b"\0") if e)

    def state(module: str, switch: str) -> str:
        if module not in maps:
            return "not built"
        off = env.get(switch.encode(), b"1").strip() == b"0"
        return f"off ({switch}=0)" if off else "on"

    return (f"ours: FIFO listener's compiled fast path "
            f"{state('_fastpath', 'MQMI_FIFO_FASTPATH')}, engine's C part (mutex lock, "
            f"compiled pop) {state('_speedups', 'MQMI_ENGINE_SPEEDUPS')}")


def floor_notes(res: Results) -> list[str]:
    """Each reference listener's server CPU per case (median) beside the servers', same
    runs."""
    notes = []
    for ref, text in REFERENCES.items():
        rows = []
        for case in res.order:
            base = res.median_cpu(case, ref)
            if not base:  # absent, or below the clock tick (--quick)
                continue
            parts = [f"{case}: {ref} {base:.1f} us/req"]
            for other in ("kamailio", "ours"):
                cpu = res.median_cpu(case, other)
                if cpu:  # absent, or below the clock tick: no ratio to give
                    parts.append(f"{other}/{ref} {cpu / base:.2f}")
            rows.append(", ".join(parts))
        if rows:
            notes.append(f"{text}: " + "; ".join(rows))
    return notes


def main(argv=None):
    args = parse_args(argv)
    shared = shared_dir(args.shared)
    cases = [(f"fifo {mode} {op} c{c}", mode, op, c)
             for mode in args.modes.split(",") if mode
             for c in client_counts(args) for op in OPS]
    if args.only:
        cases = [k for k in cases if args.only in k[0]]
    res = Results(args.json_out)
    t0 = time.monotonic()
    references = []
    pins = Pins()
    notes = []
    try:
        with Servers(args, fifo=True) as sv:
            servers = list(sv.active)
            if args.floor:
                references.append(Floor())
            if args.minimal_mi:
                references.append(MinimalMI())
            for ref in references:
                ref.start()
                servers.append(ref)
            if args.pin_cpu is not None:
                for srv in servers:
                    pins.pin(srv, args.pin_cpu)
            if sv.ours in servers:
                notes.append(listener_note(sv.ours))
            for rep in range(1, args.reps + 1):
                print(f"# repetition {rep}/{args.reps}", flush=True)
                for name, mode, op, c in cases:
                    for srv in servers:
                        s = run_case(shared, srv, mode, op, c, args)
                        res.add(name, srv.label, rep, s)
                        res.line(name, srv.label, s)
            memory = sv.memory_note()
    except KeyboardInterrupt:
        print("# interrupted; both servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}\n# both servers stopped", file=sys.stderr)
        return 2
    finally:
        pins.restore()
        for ref in references:
            ref.stop()
    notes = [
        *notes,
        memory,
        f"{args.reps} interleaved run(s) per case (ours, kamailio, ours, ...); n={args.n} "
        f"per run, warm-up {args.warmup} per client; Kamailio serves its FIFO from one "
        "process (jsonrpcs), ours from its FIFO listener process.",
        "`fresh`: a new reply FIFO per request (mkfifo, open, write the request, read to "
        "EOF, unlink); `reuse`: one reply FIFO per client process (--reuse-reply-fifo).",
        "CPU us/req = user+sys of the whole server process tree during the run "
        "(warm-up included) / requests. Every number includes the client sharing the "
        "same cores.",
        "ratio columns: ours / kamailio (req/s: >1 means ours is faster; CPU: <1 means ours "
        "uses less).",
        *([] if args.pin_cpu is None else [
            f"--pin-cpu {args.pin_cpu}: each server's FIFO-serving process and the client "
            f"ran on CPU {args.pin_cpu} alone (its other processes, and the refills, "
            "unpinned)"]),
        *floor_notes(res),
        f"total time {time.monotonic() - t0:.0f} s",
    ]
    return res.finish("MI over the FIFO: ours vs Kamailio 5.6", notes)


if __name__ == "__main__":
    sys.exit(main())
