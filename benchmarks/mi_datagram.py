"""MI over datagrams (UDP): our mi_datagram vs Kamailio 5.6's jsonrpcs over UDP, and our
FIFO, server CPU per request, interleaved.

One command: starts our server (HTTP for the set-up, the FIFO, a datagram socket on a free
UDP port) and a private Kamailio built from the peer's kamailio.cfg (--shared) with its
jsonrpcs datagram transport turned on (`transport` 7, `dgram_socket udp:127.0.0.1:PORT`),
its own ports, run directory and FIFO, so a peer already running for the other benchmarks
is not touched; prefills both, runs every case REPS times in the order ours, kamailio,
ours-fifo, ..., prints one table, stops both (also on Ctrl-C / errors).

Client: C client processes, each with one UDP socket, sending one request datagram and
waiting for its reply (what exporters polling mi_datagram do), `mq_get_size`/`mq_fetch`
of q1 (Kamailio: `mqueue.get_size`/`mqueue.fetch`); a reply that is not a result fails
the run.  The FIFO rows run the peer's bench_client.py against our FIFO with a fresh
reply FIFO per request (what opensips-cli does) and with one reply FIFO per client.
CPU us/req = user+sys of the server's whole process tree during the run (warm-up
included) / requests, as in the other benchmarks.  The target: datagram CPU per request
no higher than our FIFO's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Ours,
    Results,
    Server,
    apply_quick,
    bench_client_module,
    client_counts,
    common_args,
    fifo_flags,
    free_port,
    run_bench_client,
    shared_dir,
)

OPS = ("get_size", "fetch")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OursDatagram(Ours):
    """Our server with a datagram socket besides its HTTP listener and FIFO."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.dgram = ("127.0.0.1", free_udp_port())

    def write_config(self) -> None:
        super().write_config()
        with open(self.cfg, "a") as f:
            f.write(f"datagram:\n  socket: udp:{self.dgram[0]}:{self.dgram[1]}\n")

    def request(self, op: str, rid: int) -> bytes:
        method = {"get_size": "mq_get_size", "fetch": "mq_fetch"}[op]
        return b'{"jsonrpc":"2.0","method":"%s","params":["q1"],"id":%d}' % (
            method.encode(), rid)


class KamailioDatagram(Server):
    """A private Kamailio 5.6 from the peer's kamailio.cfg with jsonrpcs over UDP on."""

    label = "kamailio"

    def __init__(self, shared: Path, prefill: int, keep_tmp: bool) -> None:
        self.src = shared / "peers" / "kamailio" / "kamailio.cfg"
        self.tmp = Path(tempfile.mkdtemp(prefix="mqmi-kam-dgram-"))
        self.keep_tmp = keep_tmp
        self.prefill = prefill
        self.http_port = free_port()
        self.dgram = ("127.0.0.1", free_udp_port())
        self.pidfile = str(self.tmp / "kamailio.pid")
        self.log = self.tmp / "kamailio.log"
        self.proc: subprocess.Popen | None = None
        from common import Rpc

        self.rpc = Rpc(f"http://127.0.0.1:{self.http_port}/RPC")

    def write_config(self) -> Path:
        text = self.src.read_text()
        subs = [
            (r"listen=udp:127\.0\.0\.1:\d+", f"listen=udp:127.0.0.1:{free_udp_port()}"),
            (r"listen=tcp:127\.0\.0\.1:\d+", f"listen=tcp:127.0.0.1:{self.http_port}"),
            (r'rundir="[^"]*"', f'rundir="{self.tmp}"'),
            (r'modparam\("jsonrpcs", "transport", \d+\)',
             'modparam("jsonrpcs", "transport", 7)\n'
             f'modparam("jsonrpcs", "dgram_socket", "udp:{self.dgram[0]}:{self.dgram[1]}")'),
            (r'"fifo_name", "[^"]*"', f'"fifo_name", "{self.tmp}/kamailio_rpc.fifo"'),
            (r'"fifo_reply_dir", "[^"]*"', f'"fifo_reply_dir", "{self.tmp}/"'),
        ]
        for pattern, new in subs:
            text, n = re.subn(pattern, new, text)
            if n != 1:
                raise RuntimeError(f"{self.src}: expected one {pattern!r}, found {n}")
        cfg = self.tmp / "kamailio.cfg"
        cfg.write_text(text)
        return cfg

    def start(self) -> None:
        cfg = self.write_config()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["kamailio", "-f", str(cfg), "-DD", "-E", "-P", self.pidfile, "-m", "512",
                 "-M", "16", "-A", f"PREFILL_N={self.prefill}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 120
        while "mqueue peer: prefilled" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private kamailio did not come up; {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            time.sleep(0.1)

    def stop(self) -> None:
        self.rpc.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if not self.keep_tmp:
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)

    def pid(self) -> int:
        return self.proc.pid  # the attendant: every other process is its descendant

    def size(self, q: str) -> int:
        return self.rpc.call("mqueue.get_size", [q])["result"]["size"]

    def add(self, q: str, n: int) -> None:
        done = 0
        while done < n:
            k = min(100_000, n - done)
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}/fill/{q}/{k}/r", timeout=120) as r:
                r.read()
            done += k

    def request(self, op: str, rid: int) -> bytes:
        method = {"get_size": "mqueue.get_size", "fetch": "mqueue.fetch"}[op]
        return b'{"jsonrpc":"2.0","method":"%s","params":["q1"],"id":%d}' % (
            method.encode(), rid)


# ---- the datagram client ----------------------------------------------------------------

def _client(target, requests: list[bytes], warmup: list[bytes], barrier, out) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5.0)
    bad = 0
    for req in warmup:
        sock.sendto(req, target)
        sock.recv(65536)
    barrier.wait()
    lat = []
    for req in requests:
        t = time.perf_counter()
        sock.sendto(req, target)
        try:
            reply = sock.recv(65536)
        except TimeoutError:
            bad += 1
            continue
        lat.append(time.perf_counter() - t)
        if b'"result"' not in reply:
            bad += 1
    out.put((lat, bad))


def datagram_run(shared: Path, srv, op: str, n: int, c: int, warmup: int) -> dict:
    bc = bench_client_module(shared)
    per = n // c
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(c + 1)
    out = ctx.Queue()
    procs = []
    for w in range(c):
        reqs = [srv.request(op, w * per + i + 1) for i in range(per)]
        warm = [srv.request(op, 10_000_000 + i) for i in range(warmup)]
        p = ctx.Process(target=_client, args=(srv.dgram, reqs, warm, barrier, out))
        p.start()
        procs.append(p)
    cpu0 = bc.proc_tree_cpu(srv.pid())  # warm-up included, as bench_client counts it
    barrier.wait(timeout=60)
    t0 = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    cpu1 = bc.proc_tree_cpu(srv.pid())
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    bad = sum(r[1] for r in results)
    total = per * c + c * warmup
    return {
        "req_per_s": round(len(lat) / wall, 1),
        "lat_us": {"median": round(statistics.median(lat) * 1e6, 1),
                   "p99": round(bc.pct(lat, 99) * 1e6, 1)},
        "outcomes": {"result": len(lat) - bad, **({"failed": bad} if bad else {})},
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_us_per_req": round((cpu1 - cpu0) * 1e6 / total, 1),
    }


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("-n", type=int, default=5_000, help="requests per run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=20,
                    help="untimed requests per client before each run (default %(default)s)")
    ap.add_argument("--no-fifo", dest="fifo", action="store_false",
                    help="leave out the rows of our FIFO")
    args = ap.parse_args(argv)
    apply_quick(args)
    if args.quick:
        args.n, args.warmup = 400, 5
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    shared = shared_dir(args.shared)
    which = [x.strip() for x in args.servers.split(",") if x.strip()]
    ours = OursDatagram(args.workers, args.prefill, args.shm,
                        args.server_cmd.split() if args.server_cmd else None, args.keep_tmp)
    kam = KamailioDatagram(shared, args.prefill, args.keep_tmp)
    servers = [s for s in (ours, kam) if s.label in which]
    res = Results(args.json_out)
    t0 = time.monotonic()
    cases = [(op, c) for c in client_counts(args) for op in OPS]
    if args.only:
        cases = [k for k in cases if args.only in f"{k[0]} c{k[1]}"]
    try:
        for srv in servers:
            print(f"# starting {srv.label} (prefill {args.prefill})", flush=True)
            srv.start()
        for rep in range(1, args.reps + 1):
            print(f"# repetition {rep}/{args.reps}", flush=True)
            for op, c in cases:
                name = f"datagram {op} c{c}"
                for srv in servers:
                    if op == "fetch":
                        srv.refill("q1", max(args.prefill, args.n + c * args.warmup + 10))
                    s = datagram_run(shared, srv, op, args.n, c, args.warmup)
                    res.add(name, srv.label, rep, s)
                    res.line(name, srv.label, s)
                if args.fifo and ours in servers:
                    for mode in ("fresh", "reuse"):
                        if op == "fetch":
                            ours.refill("q1", max(args.prefill, args.n + c * args.warmup + 10))
                        s = run_bench_client(shared, fifo_flags(
                            ours, op, args.n, c, args.warmup, mode, pidfile=ours.pidfile))
                        label = f"ours-fifo-{mode}"
                        res.add(name, label, rep, s)
                        res.line(name, label, s)
    except KeyboardInterrupt:
        print("# interrupted; servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}\n# servers stopped", file=sys.stderr)
        return 2
    finally:
        for srv in servers:
            try:
                srv.stop()
            except Exception as e:  # keep stopping the other one
                print(f"# stopping {srv.label}: {e!r}", file=sys.stderr)
    notes = [f"target: ours datagram CPU/req <= ours FIFO CPU/req: {target_line(res)}",
             f"{args.reps} interleaved run(s) per case; n={args.n} per run, warm-up "
             f"{args.warmup} per client; one UDP socket per client process; Kamailio: "
             "a private instance of the peer's kamailio.cfg with jsonrpcs transport 7 "
             "(HTTP, FIFO, datagram) and its default pretty_format=1, one dgram worker "
             "(jsonrpcs' default); ours: one MI Datagram process.",
             "CPU us/req = user+sys of the whole server process tree during the run "
             "(warm-up included) / requests; every number includes the client sharing "
             "the same cores.",
             "ratio columns: ours / kamailio (req/s: >1 means ours is faster; CPU: <1 "
             "means ours uses less).",
             f"total time {time.monotonic() - t0:.0f} s"]
    return res.finish("MI over datagrams (UDP): ours vs Kamailio 5.6 jsonrpcs", notes)


def target_line(res: Results) -> str:
    parts = []
    for case in res.order:
        dg = res.median_cpu(case, "ours")
        fifo = {m: res.median_cpu(case, f"ours-fifo-{m}") for m in ("fresh", "reuse")}
        if dg is None or not any(fifo.values()):
            continue
        parts.append(f"{case}: datagram {dg:.1f}, FIFO fresh "
                     f"{fifo['fresh'] or 0:.1f} / reuse {fifo['reuse'] or 0:.1f} us/req")
    return "; ".join(parts) or "(no FIFO rows)"


if __name__ == "__main__":
    sys.exit(main())
