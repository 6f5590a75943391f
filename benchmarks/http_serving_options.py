"""Measure the candidate HTTP serving layers for the MI app; print one table.

Server CPU per request = user+sys of every server process (from /proc/<pid>/stat) during
the run / requests; req/s from the client's wall clock. The client is a raw-socket
HTTP/1.1 client (like bench_client.py --http-impl raw) in 1 or C processes, either on
one keep-alive connection each or with a new `Connection: close` connection per request
(what opensips-cli does).

Options:
  gunicorn-sync     gunicorn sync workers (no keep-alive: it always closes) + the app
  gunicorn-gthread  gunicorn gthread workers (1 thread, keep-alive) + the app
  prefork           mi_server.http.run_worker: our epoll + httptools loop + the same app
  prefork-wrappers  the same loop with a Werkzeug Request/Response version of the app
                    (for the record only: what the wrappers would cost)

Handles: "trivial" (json.loads of the body + a fixed reply), "core" (the real MI core over a
real Arena, method mq_get_size on an empty queue), when mi_server.mi.build_core exists.

  .venv/bin/python benchmarks/http_serving_options.py [-n 4000] [--reps 3]
      [--options prefork,gunicorn-gthread,...] [--handle trivial|core] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port  # noqa: E402

from mi_server.http import bind, make_wsgi_app  # noqa: E402
from mi_server.http.prefork import fork_workers, stop_workers  # noqa: E402


class Cfg:
    def __init__(self, port: int, workers: int) -> None:
        self.host, self.port, self.root, self.workers = "127.0.0.1", port, "mi", workers
        self.max_request, self.auth = 65536, None


# -- handles --------------------------------------------------------------------------
def trivial_handle(body: bytes) -> bytes | None:
    request = json.loads(body)
    return b'{"jsonrpc":"2.0","result":{"name":"q1","size":0},"id":' + json.dumps(
        request.get("id")).encode() + b"}"


def core_handle():
    from mi_server.engine import Arena
    from mi_server.engine.spec import QueueSpec
    from mi_server.mi import build_core
    from mi_server.mi.context import MIContext

    name = f"mqbench{os.getpid()}"
    arena = Arena.create(name, 4 << 20, [QueueSpec("q1")])
    ctx = MIContext(engine=arena, started=time.time(), argv=[], processes=lambda: [],
                    stop=lambda: None)
    return build_core(ctx).handle, arena


def wrappers_app(handle, cfg):
    """The app's rules with werkzeug.wrappers Request/Response (comparison only)."""
    from werkzeug.wrappers import Request, Response

    def app(environ, start_response):
        request = Request(environ)
        if request.path != "/mi" and not request.path.startswith("/mi/"):
            response = Response("Bad Request", 400)
        elif request.method != "POST":
            response = Response("no", 405 if request.method == "GET" else 406)
        elif request.content_length and request.content_length > cfg.max_request:
            response = Response("Request Entity Too Large", 413)
        else:
            body = request.get_data()
            reply = handle(body) if body else b""
            if reply is None:
                response = Response(b"", 202)
            else:
                response = Response(reply, 200, content_type="application/json")
        return response(environ, start_response)

    return app


# -- servers --------------------------------------------------------------------------
def start_prefork(port, handle, workers, wrappers=False):
    from mi_server.http import server

    cfg = Cfg(port, workers)
    sock = bind(cfg)
    if wrappers:
        original = server.make_wsgi_app
        server.make_wsgi_app = wrappers_app
        try:
            pids = fork_workers(sock, handle, cfg, workers)
        finally:
            server.make_wsgi_app = original
    else:
        pids = fork_workers(sock, handle, cfg, workers)
    sock.close()
    return pids, lambda: stop_workers(pids)


def start_gunicorn(port, handle, workers, worker_class):
    pid = os.fork()
    if pid == 0:
        try:
            from gunicorn.app.base import BaseApplication

            class App(BaseApplication):
                def load_config(self):
                    for k, v in {"bind": f"127.0.0.1:{port}", "workers": workers,
                                 "worker_class": worker_class, "threads": 1,
                                 "keepalive": 5, "loglevel": "warning",
                                 "accesslog": None}.items():
                        self.cfg.set(k, v)

                def load(self):
                    return make_wsgi_app(handle, Cfg(port, workers))

            sys.argv = ["gunicorn"]
            App().run()
        finally:
            os._exit(0)
    # wait until the workers accept
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)

    def stop():
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)

    return [pid] + children(pid), stop


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids):
    """CPU time of the processes (all threads), in seconds, at nanosecond resolution.

    /proc/<pid>/schedstat's first field is the time on CPU (user+sys) in ns; the
    utime/stime ticks of /proc/<pid>/stat are only 10 ms each, too coarse for short runs.
    """
    total = 0
    for pid in pids:
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue
    return total / 1e9


# -- client ---------------------------------------------------------------------------
def request_bytes(port, close):
    body = b'{"jsonrpc": "2.0", "id": "10533", "method": "mq_get_size", "params": ["q1"]}'
    conn = b"close" if close else b"keep-alive"
    return (b"POST /mi HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Connection: %s\r\nContent-Length: %d\r\n\r\n" % (port, conn, len(body))) + body


def read_reply(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return rest[length:]


def client(port, n, close, barrier, out):
    req = request_bytes(port, close)
    barrier.wait()
    t0 = time.perf_counter()
    sock = None
    for _ in range(n):
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(req)
            read_reply(sock, b"")
        except ConnectionError:  # the server closed an idle keep-alive connection: retry
            sock.close()
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(req)
            read_reply(sock, b"")
        if close:
            sock.close()
            sock = None
    out.put(time.perf_counter() - t0)


def run_clients(port, n, c, close):
    barrier, out = mp.Barrier(c + 1), mp.Queue()
    procs = [mp.Process(target=client, args=(port, n // c, close, barrier, out)) for _ in range(c)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    return (n // c) * c, wall


def measure(option, handle, n, workers, cases):
    port = free_port()
    if option == "prefork":
        pids, stop = start_prefork(port, handle, workers)
    elif option == "prefork-wrappers":
        pids, stop = start_prefork(port, handle, workers, wrappers=True)
    else:
        pids, stop = start_gunicorn(port, handle, workers, option.split("-")[1])
    time.sleep(0.3)
    rows = {}
    try:
        run_clients(port, 200 * 4, 4, False)  # warm-up
        for close, c in cases:
            if option == "gunicorn-sync" and not close:
                continue  # the sync worker closes every connection anyway
            cpu0 = cpu_seconds(pids)
            done, wall = run_clients(port, n, c, close)
            cpu1 = cpu_seconds(pids)
            rows[(close, c)] = ((cpu1 - cpu0) * 1e6 / done, done / wall)
    finally:
        stop()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--handle", choices=("trivial", "core"), default="trivial")
    ap.add_argument("--options", default="prefork,gunicorn-gthread,gunicorn-sync,prefork-wrappers")
    args = ap.parse_args()
    arena = None
    handle = trivial_handle
    if args.handle == "core":
        handle, arena = core_handle()
    cases = [(False, 1), (False, 4), (True, 1), (True, 4)]
    results: dict = {}
    try:
        for _ in range(args.reps):  # interleaved repetitions: the machine is noisy
            for option in args.options.split(","):
                for case, row in measure(option, handle, args.n, args.workers, cases).items():
                    results.setdefault((option, case), []).append(row)
    finally:
        if arena is not None:
            arena.close()
            arena.unlink()
    print(f"handle={args.handle} workers={args.workers} n={args.n} reps={args.reps} "
          "(median of reps [min-max])")
    print(f"{'option':18} {'client':16} {'server CPU us/req':>26} {'req/s':>22}")
    for (option, (close, c)), rows in results.items():
        cpu = sorted(r[0] for r in rows)
        rps = sorted(r[1] for r in rows)
        kind = f"{'close' if close else 'keep-alive'} c{c}"
        print(f"{option:18} {kind:16} {statistics.median(cpu):8.1f} [{cpu[0]:6.1f}-{cpu[-1]:6.1f}]"
              f" {statistics.median(rps):8.0f} [{rps[0]:5.0f}-{rps[-1]:5.0f}]")


if __name__ == "__main__":
    main()
