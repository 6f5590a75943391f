"""What a Prometheus scrape of GET /metrics costs the server, against a `get_statistics all`.

    .venv/bin/python benchmarks/metrics_scrape.py [--queues 2,100] [-n 2000]

For each queue count it starts a real server (one HTTP worker, `python -m mi_server`) and,
over one kept-alive connection, sends `-n` requests of each kind in alternating rounds of
100: `GET /metrics` (the default configuration: every statistic) and `POST /mi`
`get_statistics ["all"]`. The figure is the HTTP worker's CPU time per request (utime +
stime from /proc, so neither the client nor the scheduler's placement counts) and the
ratio metrics / get_statistics, which should stay at or below 1. Both read the same
statistics (mi_server.mi.commands.statistics.all_stats); what differs is the encoding.

There is no Kamailio figure: neither Kamailio's nor OpenSIPS's mqueue exports statistics,
so the peer has nothing to compare with (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
GET_STATISTICS = b'{"jsonrpc":"2.0","method":"get_statistics","params":[["all"]],"id":1}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def worker_pid(root: int) -> int:
    """The one HTTP worker: the server's child titled mi-http-1 (forked after the listening
    socket is bound, so looked for a while)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = _find_worker(root)
        if pid:
            return pid
        time.sleep(0.05)
    raise SystemExit("no HTTP worker found")


def _find_worker(root: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == root and comm == "mi-http-1":
            return int(entry.name)
    return None


def start_server(directory: Path, queues: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = {"mqueue": [f"name=q{i}" for i in range(queues)],
              "http": {"listen": f"127.0.0.1:{port}", "workers": 1},
              "shm_size": "16M", "log_level": "warning"}
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "mi_server", "-c", str(path)], cwd=ROOT,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def measure(port: int, worker: int, n: int) -> tuple[float, float, int, int]:
    """(CPU s per scrape, CPU s per get_statistics, bytes of each reply)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    host = {"Host": f"127.0.0.1:{port}"}
    spent = {"metrics": 0.0, "stats": 0.0}
    sizes = {"metrics": 0, "stats": 0}

    def one(kind: str) -> None:
        if kind == "metrics":
            conn.request("GET", "/metrics", headers=host)
        else:
            conn.request("POST", "/mi", GET_STATISTICS,
                         {**host, "Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (kind, resp.status, body[:100])
        sizes[kind] = len(body)

    for kind in spent:  # warm-up: imports, caches
        for _ in range(50):
            one(kind)
    done = 0
    while done < n:
        for kind in spent:
            before = cpu_seconds(worker)
            for _ in range(100):
                one(kind)
            spent[kind] += cpu_seconds(worker) - before
        done += 100
    conn.close()
    return spent["metrics"] / done, spent["stats"] / done, sizes["metrics"], sizes["stats"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queues", default="2,100", help="queue counts (default %(default)s)")
    ap.add_argument("-n", type=int, default=2000,
                    help="requests of each kind (default %(default)s)")
    args = ap.parse_args()
    print(f"{'queues':>6} {'metrics us/req':>15} {'get_statistics us/req':>22} {'ratio':>6} "
          f"{'bytes':>13}")
    for queues in (int(q) for q in args.queues.split(",")):
        directory = Path(tempfile.mkdtemp(prefix="mqbench-metrics-"))
        proc, port = start_server(directory, queues)
        try:
            scrape, stats, b_scrape, b_stats = measure(port, worker_pid(proc.pid), args.n)
        finally:
            proc.terminate()
            proc.wait(20)
            shutil.rmtree(directory, ignore_errors=True)
        print(f"{queues:>6} {scrape * 1e6:>15.0f} {stats * 1e6:>22.0f} {scrape / stats:>6.2f} "
              f"{b_scrape:>6}/{b_stats:<6}")


if __name__ == "__main__":
    main()
