"""Shared helpers for benchmarks/mi_http.py and benchmarks/mi_fifo.py.

Starts and stops the two servers being compared (ours: `python -m mi_server -c <temp cfg>`;
the Kamailio 5.6 peer: peers/kamailio/start.sh / stop.sh of the --shared directory), fills
their queues,
runs the peer's bench_client.py with the same flags against either, a `Connection: close`
HTTP client (bench_client has none), and prints the comparison table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# locations

PEER_ADVICE = ("the Kamailio 5.6 peer is not part of this repository: pass --shared DIR "
               "(or set MQMI_SHARED=DIR), DIR holding peers/kamailio/ with bench_client.py, "
               "start.sh, stop.sh and kamailio.cfg (docs/performance.md, \"The Kamailio "
               "peer\")")


SHARED_HELP = ("the directory holding the Kamailio peer, peers/kamailio/ "
               "(default $MQMI_SHARED, else <repo>/../shared)")


def shared_dir(override: str | None = None) -> Path:
    """The directory holding peers/kamailio/: --shared, else $MQMI_SHARED, else the
    repository's sibling `shared` (see common_args).  Missing: exit with one line of
    advice, never a traceback."""
    d = override or os.environ.get("MQMI_SHARED") or str(REPO.parent / "shared")
    p = Path(d).resolve()
    if not (p / "peers" / "kamailio" / "bench_client.py").is_file():
        raise SystemExit(f"{Path(sys.argv[0]).name}: no peers/kamailio/bench_client.py "
                         f"under {p}: {PEER_ADVICE}")
    return p


_bench_client = None


def bench_client_module(shared: Path):
    """The peer's bench_client.py imported as a module (for proc_tree_cpu, classify, pct)."""
    global _bench_client
    if _bench_client is None:
        sys.path.insert(0, str(shared / "peers" / "kamailio"))
        import bench_client  # noqa: E402
        _bench_client = bench_client
    return _bench_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# small JSON-RPC over HTTP helper (set-up only: sizes, refills; never measured)

class Rpc:
    def __init__(self, url: str, timeout: float = 60.0):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/"
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.next_id = 1

    def post(self, doc):
        body = json.dumps(doc, separators=(",", ":")).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request("POST", self.path, body,
                                  {"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return json.loads(data)
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def call(self, method: str, params=None):
        doc = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        self.next_id += 1
        if params is not None:
            doc["params"] = params
        return self.post(doc)

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


# --------------------------------------------------------------------------
# the two servers

class Server:
    """What the benchmark needs to know about one server."""
    label: str
    url: str                 # HTTP JSON-RPC endpoint
    fifo: str
    reply_dir: str
    fifo_dialect: str
    pidfile: str
    m_fetch: str
    m_get_size: str
    m_get_sizes: str

    def pid(self) -> int:
        with open(self.pidfile) as f:
            return int(f.read().strip())

    def size(self, q: str) -> int:
        raise NotImplementedError

    def add(self, q: str, n: int) -> None:
        raise NotImplementedError

    def refill(self, q: str, target: int) -> int:
        """Top q up to at least `target` items; returns the size afterwards."""
        s = self.size(q)
        if s < target:
            self.add(q, target - s)
            s = self.size(q)
            if s < target:
                raise RuntimeError(f"{self.label}: refill of {q} left {s} < {target} items")
        return s


class Kamailio(Server):
    label = "kamailio"
    fifo_dialect = "kamailio"
    m_fetch, m_get_size, m_get_sizes = "mqueue.fetch", "mqueue.get_size", "mqueue.get_sizes"

    def __init__(self, shared: Path, prefill: int):
        self.dir = shared / "peers" / "kamailio"
        self.url = "http://127.0.0.1:18080/RPC"
        self.fifo = "/tmp/kamailio-mq/kamailio_rpc.fifo"
        self.reply_dir = "/tmp/kamailio-mq/"
        self.pidfile = "/tmp/kamailio-mq/kamailio.pid"
        self.prefill = prefill
        self.started_by_us = False
        self.rpc = Rpc(self.url)

    def running(self) -> bool:
        try:
            os.kill(self.pid(), 0)
            return True
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        if self.running():
            print(f"# kamailio peer already running (pid {self.pid()}): using it as it is, "
                  "it will be left running", flush=True)
            return
        env = dict(os.environ, PREFILL_N=str(self.prefill))
        subprocess.run(["bash", str(self.dir / "start.sh")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        self.started_by_us = True

    def stop(self) -> None:
        self.rpc.close()
        if self.started_by_us:
            subprocess.run(["bash", str(self.dir / "stop.sh")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.started_by_us = False

    def size(self, q: str) -> int:
        r = self.rpc.call("mqueue.get_size", [q])
        return r["result"]["size"]

    def add(self, q: str, n: int) -> None:
        done = 0
        while done < n:               # the cfg loop is capped by max_while_loops; chunk it
            k = min(100_000, n - done)
            with urllib.request.urlopen(f"http://127.0.0.1:18080/fill/{q}/{k}/r",
                                        timeout=120) as r:
                r.read()
            done += k

    def fetch_n(self, q: str, n: int) -> None:
        """Remove n items (one request each; set-up only)."""
        for _ in range(n):
            self.rpc.call("mqueue.fetch", [q])


QUEUES = [  # the peer's kamailio.cfg queues, so mq_get_sizes lists as many entries
    "name=q1",
    "name=q2;size=100000",
    "name=q3;size=5;addmode=2",
    "name=q4;addmode=1",
    "name=qe",
]


class Ours(Server):
    label = "ours"
    fifo_dialect = "opensips"
    m_fetch, m_get_size, m_get_sizes = "mq_fetch", "mq_get_size", "mq_get_sizes"
    start_timeout = 30.0  # seconds (fifo_instructions.py: longer, under valgrind)
    stop_timeout = 15.0   # seconds before SIGKILL to the process group

    def __init__(self, workers: int, prefill: int, shm: str, server_cmd: list[str] | None,
                 keep_tmp: bool = False, fifo: bool = True):
        self.with_fifo = fifo
        self.tmp = Path(tempfile.mkdtemp(prefix="mqmi-bench-"))
        self.keep_tmp = keep_tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mi"
        self.fifo = str(self.tmp / "mi_fifo")
        self.reply_dir = str(self.tmp / "reply") + "/"
        os.mkdir(self.reply_dir)
        self.pidfile = str(self.tmp / "mi-server.pid")
        self.log = self.tmp / "server.log"
        self.cfg = self.tmp / "bench.yaml"
        self.workers = workers
        self.prefill = prefill
        self.shm = shm
        self.cmd = (server_cmd or [sys.executable, "-m", "mi_server"]) + ["-c", str(self.cfg)]
        self.proc: subprocess.Popen | None = None
        self.rpc = Rpc(self.url)
        self.serial = 0

    def write_config(self) -> None:
        lines = [
            f"shm_size: {self.shm}",
            "mqueue:",
            *[f'  - "{q}"' for q in QUEUES],
            "http:",
            f"  listen: 127.0.0.1:{self.port}",
            "  root: mi",
            f"  workers: {self.workers}",
            "  max_request: 4M",
            *([
                "fifo:",
                f"  path: {self.fifo}",
                '  mode: "0600"',
                f"  reply_dir: {self.reply_dir}",
            ] if self.with_fifo else []),
            "log_level: warning",
            f"pid_file: {self.pidfile}",
        ]
        self.cfg.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        logf = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=str(REPO), stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        logf.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"our server exited with {self.proc.returncode} at start; "
                                   f"{self.log}:\n{self._log_tail()}")
            if os.path.exists(self.pidfile) and (not self.with_fifo or os.path.exists(self.fifo)):
                try:
                    self.rpc.call("mq_get_size", ["q1"])
                    break
                except (OSError, ValueError, http.client.HTTPException):
                    self.rpc.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"our server did not come up in {self.start_timeout:.0f} s; "
                                   f"{self.log}:\n"
                                   f"{self._log_tail()}")
            time.sleep(0.1)
        for q in ("q1", "q2"):
            self.add(q, self.prefill)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        self.rpc.close()
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"# our server (pid {p.pid}) still alive after {self.stop_timeout:.0f} s: "
                      "SIGKILL to its process group", file=sys.stderr)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        self.proc = None
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def size(self, q: str) -> int:
        r = self.rpc.call("mq_get_size", {"name": q})
        return r["result"]["Queue"]["size"]

    def add(self, q: str, n: int, batch: int = 1000) -> None:
        """n x mq_add in JSON-RPC batches of `batch`; every reply must be "OK"."""
        done = 0
        while done < n:
            k = min(batch, n - done)
            reqs = []
            for i in range(k):
                self.serial += 1
                reqs.append({"jsonrpc": "2.0", "method": "mq_add", "id": i + 1,
                             "params": [q, f"rk{self.serial}", f"rv{self.serial}"]})
            replies = self.rpc.post(reqs)
            if (not isinstance(replies, list) or len(replies) != k
                    or any(r.get("result") != "OK" for r in replies)):
                bad = replies if not isinstance(replies, list) else next(
                    r for r in replies if r.get("result") != "OK")
                raise RuntimeError(f"ours: batched mq_add to {q} failed: {str(bad)[:300]}")
            done += k

    def fetch_n(self, q: str, n: int) -> None:
        while n > 0:
            k = min(1000, n)
            self.rpc.call("mq_fetch", {"name": q, "limit": k})
            n -= k


def set_exact(srv: Server, q: str, n: int) -> None:
    """Make q hold exactly n items (for the drain case)."""
    s = srv.size(q)
    if s > n:
        srv.fetch_n(q, s - n)
    elif s < n:
        srv.add(q, n - s)
    s = srv.size(q)
    if s != n:
        raise RuntimeError(f"{srv.label}: could not set {q} to {n} items (has {s})")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def tree_runtime(root: int) -> float | None:
    """CPU seconds run so far by every thread of `root` and its descendants, from the
    scheduler's own clock (/proc/<pid>/task/<tid>/schedstat, first field, nanoseconds).

    /proc/<pid>/stat's utime+stime, which the peer's bench_client reports, is sampled at
    the timer tick (every 4-10 ms, a whole tick charged to whoever runs then): a server
    that runs a few microseconds per wake-up, thousands of times a second, is charged by
    where its runs fall against the tick, not by how long they are.  The scheduler adds up
    every run's exact length, so both figures are printed.  None where the kernel has no
    schedstat (CONFIG_SCHED_INFO off)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(c for c, pp in parents.items() if pp == pid)
    total = 0
    for pid in tree:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                continue
            except (OSError, IndexError, ValueError):
                return None
    return total / 1e9


def with_runtime(s: dict, root: int, before: float | None) -> dict:
    """`s` (a run's summary) with server_runtime_us_per_req: tree_runtime's CPU since
    `before`, per request as server_cpu_us_per_req counts them (warm-up included)."""
    after = tree_runtime(root) if before is not None else None
    cpu_s, per_req = s.get("server_cpu_s"), s.get("server_cpu_us_per_req")
    if after is not None and cpu_s and per_req:
        requests = cpu_s * 1e6 / per_req
        s["server_runtime_s"] = round(after - before, 4)
        s["server_runtime_us_per_req"] = round((after - before) * 1e6 / requests, 1)
    return s


READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}.get(os.uname().machine)


def fifo_reader(root: int, path: str) -> int | None:
    """The process of `root`'s tree that is waiting in read() on `path` (the one serving
    the FIFO; Kamailio opens it before forking, so every one of its processes holds it)."""
    if READ_SYSCALL is None:
        raise SystemExit(f"finding a FIFO's reader knows read()'s system call number on "
                         f"x86_64 and aarch64 only, not {os.uname().machine}")
    try:
        st = os.stat(path)
    except OSError:
        return None
    fifo = (st.st_dev, st.st_ino)
    todo, seen = [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/syscall") as f:
                call = f.read().split()
            # the first argument of read() is the descriptor
            if len(call) > 1 and call[0] == READ_SYSCALL:
                fd = os.stat(f"/proc/{pid}/fd/{int(call[1], 16)}")
                if (fd.st_dev, fd.st_ino) == fifo:
                    return pid
        except (OSError, ValueError):
            pass  # gone, or not in read(): its children may still be the one
        todo.extend(_children(pid))
    return None


def wait_for_fifo_reader(root: int, path: str, label: str, timeout: float) -> int:
    """fifo_reader, waited for: a server may be busy, or not yet serving."""
    deadline = time.monotonic() + timeout
    while (pid := fifo_reader(root, path)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: no process serving {path}")
        time.sleep(0.05)
    return pid


def tree_memory(root: int) -> tuple[int, int, int]:
    """(processes, summed RSS KiB, summed PSS KiB) of a process and all its descendants.

    PSS shares each page among the processes mapping it, so the sum is the memory the whole
    server really holds (shared memory and copy-on-write pages counted once)."""
    todo, n, rss, pss = [root], 0, 0, 0
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
        n += 1
        todo.extend(_children(pid))
    return n, rss, pss


class Servers:
    """Context manager: both servers up, both stopped on exit, Ctrl-C or SIGTERM."""

    def __init__(self, args, fifo: bool, extras: tuple[Server, ...] = ()):
        self.args = args
        self.extras = list(extras)  # more servers measured after these two (mi_http.py)
        shared = shared_dir(args.shared)
        self.ours = Ours(args.workers, args.prefill, args.shm,
                         args.server_cmd.split() if args.server_cmd else None, args.keep_tmp,
                         fifo)
        self.kam = Kamailio(shared, args.prefill)
        self.which = [x.strip() for x in args.servers.split(",") if x.strip()]
        known = ["ours", "kamailio", *(s.label for s in self.extras)]
        bad = set(self.which) - set(known)
        if bad or not self.which:
            raise SystemExit(f"--servers: some of {', '.join(known)}, not {args.servers!r}")
        self._old_term = None

    def __enter__(self):
        self._old_term = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        try:
            if "kamailio" in self.which:
                print(f"# starting kamailio peer (PREFILL_N={self.args.prefill})", flush=True)
                self.kam.start()
            if "ours" in self.which:
                print(f"# starting ours: {' '.join(self.ours.cmd)} "
                      f"(workers={self.args.workers}); prefilling q1, q2 with "
                      f"{self.args.prefill} items via batched mq_add", flush=True)
                t = time.monotonic()
                self.ours.start()
                print(f"# ours up at {self.ours.url}"
                      + (f", fifo {self.ours.fifo}" if self.ours.with_fifo else "")
                      + f" (pid {self.ours.pid()}, prefill {time.monotonic() - t:.1f} s)",
                      flush=True)
            for srv in self.extras:
                if srv.label in self.which:
                    print(f"# starting {srv.label}", flush=True)
                    srv.start()
                    print(f"# {srv.label} up at {srv.url} (pid {srv.pid()})", flush=True)
        except BaseException:
            self.stop()
            raise
        return self

    def memory_note(self) -> str:
        """One line: each running server's process count and memory (tree_memory)."""
        parts = []
        for srv in self.active:
            n, rss, pss = tree_memory(srv.pid())
            parts.append(f"{srv.label}: {n} processes, PSS {pss / 1024:.1f} MiB "
                         f"(RSS summed {rss / 1024:.1f} MiB)")
        return "memory at the end of the runs (whole process trees, q2 still holding the "\
               "prefill): " + "; ".join(parts)

    @property
    def active(self) -> list[Server]:
        """The servers in run order: ours first, then kamailio, then the extras."""
        return [s for s in (self.ours, self.kam, *self.extras) if s.label in self.which]

    def stop(self):
        for s in (self.ours, self.kam, *self.extras):
            try:
                s.stop()
            except Exception as e:     # keep stopping the other one
                print(f"# stopping {s.label}: {e!r}", file=sys.stderr)

    def __exit__(self, *exc):
        print("# stopping both servers", flush=True)
        self.stop()
        signal.signal(signal.SIGTERM, self._old_term or signal.SIG_DFL)
        return False


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


# --------------------------------------------------------------------------
# running the client

def fifo_flags(srv, op: str, n: int, clients: int, warmup: int, mode: str,
               pidfile: str | None = None) -> list[str]:
    """bench_client's flags for one FIFO case against `srv` (fifo, reply_dir, fifo_dialect,
    m_<op>): `op` of q1, `mode` fresh or reuse (one reply FIFO per client process);
    `pidfile`: the server's, for the client to measure its CPU."""
    flags = ["--transport", "fifo", "--fifo", srv.fifo, "--reply-dir", srv.reply_dir,
             "--fifo-dialect", srv.fifo_dialect, "--method", getattr(srv, "m_" + op),
             "--params", json.dumps(["q1"]), "-n", str(n), "-c", str(clients),
             "--warmup", str(warmup)]
    if mode == "reuse":
        flags.append("--reuse-reply-fifo")
    if pidfile is not None:
        flags += ["--server-pidfile", pidfile]
    return flags


def require_results(s: dict, what: str) -> None:
    """Stop a measurement whose run had any reply other than a result (its figures would
    describe failures, not the server's work)."""
    if set(s["outcomes"]) != {"result"} or s.get("transport_failures"):
        raise SystemExit(f"{what}: failed requests: outcomes {s['outcomes']}, "
                         f"{s.get('transport_failures')} transport failures")


def run_bench_client(shared: Path, flags: list[str], timeout: float = 900,
                     cpu: int | None = None) -> dict:
    """Run the peer's bench_client.py with `flags` (on CPU `cpu` alone, when given, its
    worker processes included); return its JSON summary."""
    fd, out = tempfile.mkstemp(prefix="mqmi-run-", suffix=".json")
    os.close(fd)
    try:
        cmd = [sys.executable, str(shared / "peers" / "kamailio" / "bench_client.py"),
               *flags, "--json-out", out]
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=pin)
        try:
            with open(out) as f:
                s = json.load(f)
        except (OSError, ValueError):
            raise RuntimeError(f"bench_client failed ({p.returncode}): {' '.join(cmd)}\n"
                               f"{p.stdout}{p.stderr}") from None
        s["cmd"] = cmd[1:-2]
        return s
    finally:
        os.unlink(out)


# ---- Connection: close client (what opensips-cli does: one connection per request)

def _close_call(host, port, head, body, timeout):
    """One request on a fresh connection; returns (body bytes, client_closed).

    Reads the reply by Content-Length; when the server says it closes (Connection: close
    or HTTP/1.0), reads on to EOF as opensips-cli's urllib does; a server that keeps the
    connection open anyway (Kamailio's xhttp ignores `Connection: close`) is closed by us
    once the body is complete."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        buf = b""
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            d = s.recv(65536)
            if not d:
                raise ConnectionResetError("server closed before the reply head")
            buf += d
        lines = buf[:i].decode("latin-1").split("\r\n")
        clen = None
        closes = lines[0].startswith("HTTP/1.0")
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                clen = int(v)
            elif k == "connection":
                closes = v.strip().lower() == "close"
        end = None if clen is None else i + 4 + clen
        while end is None or len(buf) < end or closes:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        if end is not None and len(buf) < end:
            raise ConnectionResetError("server closed mid-body")
        return buf[i + 4:end], not closes
    finally:
        s.close()


def _close_worker(cfg, worker, count, barrier, out):
    try:
        _close_worker_run(cfg, worker, count, barrier, out)
    except KeyboardInterrupt:     # Ctrl-C: the parent reports it and stops the servers
        pass
    except Exception as e:        # e.g. a failed warm-up: the parent must not wait forever
        barrier.abort()           # the other workers stop waiting at the barrier too
        out.put({"error": f"close client {worker}: {e!r}"})


def _close_worker_run(cfg, worker, count, barrier, out):
    host, port, path, method, params, warmup, timeout, classify = cfg
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\nContent-Length: ").encode()
    base = worker * 10_000_000
    lat, outcomes, failures, first_fail, client_closed = [], {}, 0, None, 0

    def body(rid):
        doc = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            doc["params"] = params
        doc["id"] = rid
        return json.dumps(doc, separators=(",", ":")).encode()

    for i in range(warmup):
        _close_call(host, port, head, body(base + i + 1), timeout)
    if barrier is not None:
        barrier.wait()
    pc = time.perf_counter
    t_start = pc()
    for i in range(count):
        b = body(base + warmup + i + 1)
        t0 = pc()
        try:
            data, cc = _close_call(host, port, head, b, timeout)
        except Exception as e:
            failures += 1
            first_fail = first_fail or repr(e)
            continue
        lat.append(pc() - t0)
        client_closed += cc
        k = classify(data)
        outcomes[k] = outcomes.get(k, 0) + 1
    t_end = pc()
    out.put({"start": t_start, "end": t_end, "lat": lat, "outcomes": outcomes,
             "failures": failures, "first_failure": first_fail,
             "client_closed": client_closed})


def close_bench(shared: Path, url: str, method: str, params, n: int, c: int, warmup: int,
                server_pid: int, timeout: float = 5.0) -> dict:
    """bench_client-shaped summary for n requests, one TCP connection each, c processes."""
    bc = bench_client_module(shared)
    u = urllib.parse.urlsplit(url)
    cfg = (u.hostname, u.port or 80, u.path or "/", method, params, warmup, timeout,
           bc.classify)
    shares = [n // c + (1 if i < n % c else 0) for i in range(c)]
    cpu0 = bc.proc_tree_cpu(server_pid)
    ctx = mp.get_context("fork")
    if c == 1:
        import queue
        out = queue.Queue()
        _close_worker_run(cfg, 0, shares[0], None, out)
        results = [out.get()]
    else:
        barrier, out = ctx.Barrier(c), ctx.Queue()
        procs = [ctx.Process(target=_close_worker, args=(cfg, w, shares[w], barrier, out))
                 for w in range(c)]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError("; ".join(errors))
    cpu1 = bc.proc_tree_cpu(server_pid)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    lat = sorted(x for r in results for x in r["lat"])
    outcomes: dict[str, int] = {}
    for r in results:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {
        "transport": "http", "http_impl": "close", "target": url, "method": method,
        "params": params, "count": n, "concurrency": c, "completed": len(lat),
        "transport_failures": sum(r["failures"] for r in results),
        "first_failure": next((r["first_failure"] for r in results if r["first_failure"]),
                              None),
        "client_closed": sum(r["client_closed"] for r in results),
        "wall_s": round(wall, 4),
        "req_per_s": round(len(lat) / wall, 1) if wall > 0 else None,
        "lat_us": {"median": round(statistics.median(lat) * 1e6, 1) if lat else None,
                   "p99": round(bc.pct(lat, 99) * 1e6, 1)},
        "outcomes": outcomes,
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_us_per_req": (round((cpu1 - cpu0) * 1e6 / (len(lat) + c * warmup), 1)
                                  if lat else None),
    }


# --------------------------------------------------------------------------
# results, checks and the table

class Results:
    """Collects runs per (case, server); checks outcomes; prints the table."""

    def __init__(self, json_out: str | None):
        self.runs: dict[str, dict[str, list[dict]]] = {}
        self.order: list[str] = []
        self.problems: list[str] = []
        self.json_out = Path(json_out) if json_out else None
        if self.json_out:
            self.json_out.mkdir(parents=True, exist_ok=True)

    def add(self, case: str, server: str, rep: int, s: dict, expect: str = "result") -> None:
        if case not in self.runs:
            self.runs[case] = {}
            self.order.append(case)
        self.runs[case].setdefault(server, []).append(s)
        bad = {k: v for k, v in s.get("outcomes", {}).items() if k != expect}
        if bad or s.get("transport_failures"):
            msg = (f"{case} / {server} / run {rep}: outcomes {s.get('outcomes')}, "
                   f"{s.get('transport_failures')} transport failures"
                   + (f" (first: {s['first_failure']})" if s.get("first_failure") else ""))
            self.problems.append(msg)
            print(f"#   !! {msg}", flush=True)
        if self.json_out:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{case}__{server}__r{rep}") + ".json"
            with open(self.json_out / name, "w") as f:
                json.dump(s, f, indent=1, sort_keys=True)
                f.write("\n")

    def line(self, case: str, server: str, s: dict) -> None:
        rate = s.get("items_per_s") or s.get("req_per_s") or 0
        unit = "items/s" if "items_per_s" in s else "req/s"
        print(f"#   {case:<34} {server:<8} {rate:>9.0f} {unit}  "
              f"med {s['lat_us']['median']} us  p99 {s['lat_us']['p99']} us  "
              f"cpu {s.get('server_cpu_us_per_req')} us/req"
              + (f" (sched {s['server_runtime_us_per_req']})"
                 if s.get("server_runtime_us_per_req") is not None else "")
              + f"  {json.dumps(s.get('outcomes'))}",
              flush=True)

    def median_cpu(self, case: str, server: str,
                   key: str = "server_cpu_us_per_req") -> float | None:
        """Median server CPU us/request of a case's runs on `server` (None: no figure)."""
        cpus = [r[key] for r in self.runs[case].get(server, []) if r.get(key) is not None]
        return statistics.median(cpus) if cpus else None

    def runtime_table(self, servers=("ours", "kamailio")) -> str | None:
        """Server CPU per request by the scheduler's clock (tree_runtime), where the runs
        have it: the median and the ratio of each case."""
        a, b = servers
        key = "server_runtime_us_per_req"
        rows = []
        for case in self.order:
            ma, mb = self.median_cpu(case, a, key), self.median_cpu(case, b, key)
            if ma is None or mb is None:
                continue
            ratios = sorted(x[key] / y[key] for x, y in zip(
                self.runs[case].get(a, []), self.runs[case].get(b, []), strict=False)
                if x.get(key) and y.get(key))
            spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if ratios else "-"
            rows.append(f"| {case} | {ma:.1f} | {mb:.1f} | {ma / mb:.2f}x | {spread} |")
        if not rows:
            return None
        return "\n".join([f"| case | {a} CPU us/req | {b} CPU us/req | CPU {a}/{b} | "
                          f"per repetition |", "|---|---|---|---|---|", *rows])

    def cpu_table(self, labels: list[str]) -> str | None:
        """Every server's CPU per request by the scheduler's clock (the tick-sampled figure
        where a run has no other), medians, and the ratios that say what each adds: ours
        and the floor to Kamailio (the floor's is the least any server can reach on this
        machine), ours to OpenSIPS, and ours above the floor."""
        def cpu(case: str, label: str) -> float | None:
            got = self.median_cpu(case, label, "server_runtime_us_per_req")
            return got if got is not None else self.median_cpu(case, label)

        ratios = [(a, b) for a, b in (("ours", "kamailio"), ("floor", "kamailio"),
                                      ("ours", "opensips"), ("opensips", "kamailio"))
                  if a in labels and b in labels]
        head = ["case", *(f"{x} us/req" for x in labels), *(f"{a}/{b}" for a, b in ratios)]
        if "floor" in labels and "ours" in labels:
            head.append("ours - floor us")
        rows = []
        for case in self.order:
            got = {x: cpu(case, x) or None for x in labels}  # 0: under one clock tick
            if all(v is None for v in got.values()):
                continue
            row = [case, *("-" if got[x] is None else f"{got[x]:.1f}" for x in labels)]
            row += ["-" if not got[a] or not got[b] else f"{got[a] / got[b]:.2f}"
                    for a, b in ratios]
            if "floor" in labels and "ours" in labels:
                row.append("-" if got["ours"] is None or got["floor"] is None
                           else f"{got['ours'] - got['floor']:+.1f}")
            rows.append("| " + " | ".join(row) + " |")
        if not rows:
            return None
        return "\n".join(["| " + " | ".join(head) + " |",
                          "|" + "---|" * len(head), *rows])

    def table(self, servers=("ours", "kamailio")) -> str:
        a, b = servers
        out = [
            f"| case | {a} req/s median [min-max] | {b} req/s median [min-max] | "
            f"req/s {a}/{b} | {a} lat med/p99 us | {b} lat med/p99 us | "
            f"{a} CPU us/req | {b} CPU us/req | CPU {a}/{b} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for case in self.order:
            cols, med_rate, med_cpu = [], {}, {}
            for srv in servers:
                runs = self.runs[case].get(srv, [])
                rates = [r.get("items_per_s") or r.get("req_per_s") or 0 for r in runs]
                if not runs:
                    cols.append(("-", "-", "-"))
                    continue
                med_rate[srv] = statistics.median(rates)
                med_cpu[srv] = self.median_cpu(case, srv)
                lm = statistics.median(r["lat_us"]["median"] for r in runs)
                lp = statistics.median(r["lat_us"]["p99"] for r in runs)
                cols.append((f"{med_rate[srv]:.0f} [{min(rates):.0f}-{max(rates):.0f}]",
                             f"{lm:.0f} / {lp:.0f}",
                             "-" if med_cpu[srv] is None else f"{med_cpu[srv]:.1f}"))
            rr = (f"{med_rate[a] / med_rate[b]:.2f}x" if med_rate.get(a) and med_rate.get(b)
                  else "-")
            cr = (f"{med_cpu[a] / med_cpu[b]:.2f}x" if med_cpu.get(a) and med_cpu.get(b)
                  else "-")
            out.append(f"| {case} | {cols[0][0]} | {cols[1][0]} | **{rr}** | {cols[0][1]} | "
                       f"{cols[1][1]} | {cols[0][2]} | {cols[1][2]} | {cr} |")
        return "\n".join(out)

    def finish(self, title: str, notes: list[str], labels: list[str] | None = None) -> int:
        print()
        print(f"## {title}")
        print()
        print(self.table())
        print()
        runtime = self.runtime_table()
        if runtime is not None:
            print("Server CPU per request by the scheduler's clock (/proc/<pid>/task/<tid>/"
                  "schedstat; the table above: /proc/<pid>/stat's tick-sampled utime+stime):")
            print()
            print(runtime)
            print()
        every = self.cpu_table(labels) if labels and len(labels) > 2 else None
        if every is not None:
            print("Every server's CPU per request (medians, the scheduler's clock):")
            print()
            print(every)
            print()
        for n in notes:
            print(f"* {n}")
        if self.problems:
            print()
            print(f"**{len(self.problems)} run(s) with unexpected outcomes or failures:**")
            for p in self.problems:
                print(f"* {p}")
        if self.json_out:
            print(f"\nraw per-run JSON in {self.json_out}")
        return 1 if self.problems else 0


# --------------------------------------------------------------------------
# command line shared by both scripts

def common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--reps", type=int, default=int(os.environ.get("REPS", 3)),
                    help="interleaved repetitions per case (env REPS; default %(default)s)")
    ap.add_argument("--workers", type=int, default=2,
                    help="our server's HTTP workers (default %(default)s)")
    ap.add_argument("--clients", default="1,4",
                    help="client process counts, comma separated (default %(default)s)")
    ap.add_argument("--prefill", type=int, default=100_000,
                    help="items put in q1 and q2 at start (both servers; default %(default)s)")
    ap.add_argument("--shm", default="256M", help="our shm_size (default %(default)s)")
    ap.add_argument("--shared", default=None, metavar="DIR", help=SHARED_HELP)
    ap.add_argument("--server-cmd", default=None,
                    help="command that runs our server, '-c CFG' appended "
                         "(default: this python -m mi_server)")
    ap.add_argument("--servers", default="ours,kamailio",
                    help="which servers to run (default %(default)s; one alone for debugging)")
    ap.add_argument("--only", default=None,
                    help="run only the cases whose name contains this text")
    ap.add_argument("--json-out", default=None, metavar="DIR",
                    help="keep every run's raw JSON summary in DIR")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep our server's temp dir (config, log, FIFO dir)")
    ap.add_argument("--quick", action="store_true",
                    help="short smoke run: small n, REPS=1, smaller prefill")


def apply_quick(args) -> None:
    if args.quick:
        args.reps = 1
        args.prefill = min(args.prefill, 20_000)


def client_counts(args) -> list[int]:
    return [int(x) for x in args.clients.split(",") if x.strip()]
