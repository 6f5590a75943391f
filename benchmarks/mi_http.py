"""MI over HTTP: our server vs the Kamailio 5.6 peer, same client, same flags, interleaved.

One command: starts both servers (ours on a free port from a temp config, the peer with
<shared>/peers/kamailio/start.sh, see --shared), prefills them, runs every case REPS times
in the order ours, kamailio, ours, kamailio..., prints one table, stops both (also on
Ctrl-C / errors).  Measured beside them in the same rounds: the floor
(benchmarks/http_floor.c, a C server that answers canned replies: what a request costs
the kernel whatever the server does), and, with --opensips PREFIX, a real OpenSIPS you
built (benchmarks/http_peers.py); a third table then has every server's CPU per request.

Cases: fetch / get_size / get_sizes of q1 with bench_client.py keep-alive clients
(`--http-impl raw` and `httpclient`) and with a `Connection: close` client (one TCP
connection per request, like opensips-cli), 1 and 4 client processes; then a drain of
100,000 items (ours: mq_fetch with `limit`; Kamailio: one mqueue.fetch per request).
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
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
    close_bench,
    common_args,
    run_bench_client,
    set_exact,
    shared_dir,
    tree_runtime,
    with_runtime,
)
from http_peers import Floor, OpenSIPS  # noqa: E402

OPS = ("fetch", "get_size", "get_sizes")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.set_defaults(servers="ours,kamailio,floor")
    ap.add_argument("--opensips", default=None, metavar="PREFIX",
                    help="also measure a real OpenSIPS installed under PREFIX "
                         "(PREFIX/sbin/opensips and its modules; not part of this "
                         "repository: build it from its source yourself)")
    ap.add_argument("-n", type=int, default=10_000,
                    help="requests per keep-alive run (default %(default)s)")
    ap.add_argument("--n-close", type=int, default=3_000,
                    help="requests per Connection: close run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=100,
                    help="untimed requests per client before each run (default %(default)s)")
    ap.add_argument("--impls", default="raw,httpclient,close",
                    help="client kinds, comma separated (default %(default)s)")
    ap.add_argument("--drain", type=int, default=100_000,
                    help="items in q1 for the drain case; 0 skips it (default %(default)s)")
    ap.add_argument("--drain-limit", type=int, default=1000,
                    help="our mq_fetch limit per request in the drain (default %(default)s)")
    ap.add_argument("--drain-clients", type=int, default=1,
                    help="client processes in the drain, both servers (default %(default)s)")
    ap.add_argument("--with-fifo", action="store_true",
                    help="also enable our FIFO transport (idle) during the HTTP runs")
    args = ap.parse_args(argv)
    if args.opensips and "opensips" not in args.servers.split(","):
        args.servers += ",opensips"
    apply_quick(args)
    if args.quick:
        args.n, args.n_close, args.warmup = 300, 300, 10
        args.drain = min(args.drain, 5_000)
    return args


def method_params(srv, op):
    return getattr(srv, "m_" + op), (None if op == "get_sizes" else ["q1"])


def run_case(shared, srv, impl, op, c, args):
    method, params = method_params(srv, op)
    n = args.n_close if impl == "close" else args.n
    if op == "fetch":
        srv.refill("q1", max(args.prefill, n + c * args.warmup + 10))
    pid = srv.pid()
    before = tree_runtime(pid)
    if impl == "close":
        s = close_bench(shared, srv.url, method, params, n, c, args.warmup, pid)
        return with_runtime(s, pid, before)
    flags = ["--transport", "http", "--url", srv.url, "--http-impl", impl,
             "--method", method, "-n", str(n), "-c", str(c), "--warmup", str(args.warmup),
             "--server-pidfile", srv.pidfile]
    if params is not None:
        flags += ["--params", json.dumps(params)]
    return with_runtime(run_bench_client(shared, flags), pid, before)


def run_drain(shared, srv, args):
    """Empty q1 holding exactly args.drain items; items/s and server CPU us per item."""
    set_exact(srv, "q1", args.drain)
    if srv.label == "ours":
        method = srv.m_fetch
        params = {"name": "q1", "limit": args.drain_limit}
        n = math.ceil(args.drain / args.drain_limit)
    else:
        method, params, n = srv.m_fetch, ["q1"], args.drain
    flags = ["--transport", "http", "--url", srv.url, "--http-impl", "raw",
             "--method", method, "--params", json.dumps(params), "-n", str(n),
             "-c", str(args.drain_clients), "--server-pidfile", srv.pidfile]
    s = run_bench_client(shared, flags, timeout=1800)
    left = srv.size("q1")
    if left != 0:
        s["outcomes"] = dict(s["outcomes"], **{f"left_in_q1:{left}": 1})
    s["items"] = args.drain
    s["items_per_s"] = round(args.drain / s["wall_s"], 1) if s["wall_s"] else None
    s["requests_per_item"] = n / args.drain
    if s.get("server_cpu_s") is not None:
        s["server_cpu_us_per_req_orig"] = s["server_cpu_us_per_req"]
        s["server_cpu_us_per_req"] = round(s["server_cpu_s"] * 1e6 / args.drain, 2)
    return s


def main(argv=None):
    args = parse_args(argv)
    shared = shared_dir(args.shared)
    impls = [x for x in args.impls.split(",") if x]
    cases = [(f"http {impl} {op} c{c}", impl, op, c)
             for impl in impls for c in client_counts(args) for op in OPS]
    if args.only:
        cases = [k for k in cases if args.only in k[0]]
    drain_name = f"drain q1 {args.drain} items c{args.drain_clients} [items/s, CPU us/item]"
    do_drain = args.drain > 0 and (not args.only or args.only in drain_name)
    res = Results(args.json_out)
    t0 = time.monotonic()
    try:
        extras = [Floor(args.workers)]
        if args.opensips:
            extras.append(OpenSIPS(Path(args.opensips), args.prefill))
        with Servers(args, fifo=args.with_fifo, extras=tuple(extras)) as sv:
            servers = sv.active
            for rep in range(1, args.reps + 1):
                print(f"# repetition {rep}/{args.reps}", flush=True)
                for name, impl, op, c in cases:
                    for srv in servers:
                        s = run_case(shared, srv, impl, op, c, args)
                        res.add(name, srv.label, rep, s)
                        res.line(name, srv.label, s)
                if do_drain:
                    name = drain_name
                    for srv in servers:
                        if srv.label == "floor":  # canned replies drain nothing
                            continue
                        s = run_drain(shared, srv, args)
                        res.add(name, srv.label, rep, s)
                        res.line(name, srv.label, s)
                    for srv in servers:      # back to the usual level for the next block
                        if srv.label != "floor":
                            srv.refill("q1", args.prefill)
            memory = sv.memory_note()
    except KeyboardInterrupt:
        print("# interrupted; both servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}\n# both servers stopped", file=sys.stderr)
        return 2
    notes = [
        memory,
        f"{args.reps} interleaved run(s) per case (ours, kamailio, ours, ...); "
        f"n={args.n} per keep-alive run, n={args.n_close} per close run, warm-up "
        f"{args.warmup} per client; ours: {args.workers} HTTP workers; Kamailio: its "
        "start.sh defaults (NTCPCHILDREN=4 HTTP workers unless set in the environment).",
        "`raw`/`httpclient`: bench_client.py keep-alive clients; `close`: one TCP connection "
        "per request with `Connection: close` (benchmarks/common.py; Kamailio ignores the "
        "header and keeps the connection open, so the client closes it after the body).",
        "CPU us/req = user+sys of the whole server process tree during the run "
        "(warm-up included) / requests. Every number includes the client sharing the "
        "same cores.",
        "ratio columns: ours / kamailio (req/s: >1 means ours is faster; CPU: <1 means ours "
        "uses less).",
    ]
    if do_drain:
        notes.append(
            f"drain: q1 set to exactly {args.drain} items, then emptied by raw keep-alive "
            f"requests: ours mq_fetch limit={args.drain_limit}, Kamailio one mqueue.fetch "
            "per request; the rate column is items/s, CPU is us per item, latency is per "
            "request. Target: ours >= 20x Kamailio.")
        runs = res.runs.get(drain_name, {})
        if runs.get("ours") and runs.get("kamailio"):
            import statistics
            a = statistics.median(r["items_per_s"] for r in runs["ours"])
            b = statistics.median(r["items_per_s"] for r in runs["kamailio"])
            notes.append(f"drain ratio ours/kamailio: {a:.0f} / {b:.0f} items/s = "
                         f"**{a / b:.1f}x** ({'meets' if a >= 20 * b else 'BELOW'} the 20x "
                         "target)")
    notes.append(f"total time {time.monotonic() - t0:.0f} s")
    return res.finish("MI over HTTP: ours vs Kamailio 5.6", notes,
                      [srv.label for srv in servers])


if __name__ == "__main__":
    sys.exit(main())
