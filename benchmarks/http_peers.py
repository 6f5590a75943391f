"""More HTTP servers for benchmarks/mi_http.py to measure beside ours and Kamailio.

- `Floor`: benchmarks/http_floor.c, a C server that does nothing but the socket work of a
  request (canned replies), built with the machine's C compiler: what a request costs the
  kernel whatever the server does, so that each server's figure can be read as the floor
  plus what that server adds.
- `OpenSIPS`: a real OpenSIPS (3.6 tested) that the user built and installed; the
  benchmark writes its configuration (mqueue's queues as ours and the peer have them,
  httpd + mi_http on a free port) and starts it from `--opensips PREFIX`.  OpenSIPS has no
  mq_add MI command: its queues are filled by its script, from a SIP MESSAGE this module
  sends over UDP (see refill).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common import QUEUES, Rpc, Server, free_port

HERE = Path(__file__).resolve().parent


def _wait_for(rpc: Rpc, method: str, params, label: str, proc: subprocess.Popen,
              log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{label} exited with {proc.returncode} at start; {log}:\n"
                               + log.read_text(errors="replace")[-2000:])
        try:
            rpc.call(method, params)
            return
        except (OSError, ValueError):
            rpc.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label} did not answer in {timeout:.0f} s; {log}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen | None, label: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        print(f"# {label} (pid {proc.pid}) still alive after 15 s: SIGKILL to its group")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Floor(Server):
    """benchmarks/http_floor.c with `workers` processes; every reply is the same."""

    label = "floor"
    m_fetch, m_get_size, m_get_sizes = "mq_fetch", "mq_get_size", "mq_get_sizes"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.tmp = Path(tempfile.mkdtemp(prefix="mqmi-floor-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mi"
        self.pidfile = str(self.tmp / "floor.pid")
        self.log = self.tmp / "floor.log"
        self.rpc = Rpc(self.url)
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def compiler() -> str | None:
        return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")

    def start(self) -> None:
        cc = self.compiler()
        if cc is None:
            raise RuntimeError("the floor server needs a C compiler (cc): install one, or "
                               "leave floor out of --servers")
        binary = self.tmp / "http_floor"
        subprocess.run([cc, "-O2", "-o", str(binary), str(HERE / "http_floor.c")],
                       check=True)
        logf = open(self.log, "wb")
        self.proc = subprocess.Popen([str(binary), str(self.port), str(self.workers),
                                      self.pidfile], stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        _wait_for(self.rpc, "mq_get_size", ["q1"], "the floor server", self.proc, self.log)
        while not os.path.exists(self.pidfile):
            time.sleep(0.05)

    def stop(self) -> None:
        self.rpc.close()
        _stop(self.proc, "the floor server")
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def size(self, q: str) -> int:  # its queues never empty (the drain leaves it out)
        return 10**9

    def add(self, q: str, n: int) -> None:
        return None


OPENSIPS_CFG = """\
# written by benchmarks/http_peers.py for one benchmark run
log_level = 2
stderror_enabled = yes
syslog_enabled = no
udp_workers = 1
max_while_loops = 1000000
socket = udp:127.0.0.1:{sip_port}
mpath = "{mpath}"

loadmodule "proto_udp.so"
loadmodule "httpd.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", {port})
loadmodule "mi_http.so"
modparam("mi_http", "root", "mi")
loadmodule "mqueue.so"
{queues}

# a MESSAGE with X-Queue and X-Count adds that many items (OpenSIPS has no mq_add MI
# command): how the benchmark fills and tops up the queues
route {{
    if ($rm == "MESSAGE") {{
        $var(i) = 0;
        $var(n) = $(hdr(X-Count){{s.int}});
        while ($var(i) < $var(n)) {{
            mq_add("$hdr(X-Queue)", "k$var(i)", "v$var(i)");
            $var(i) = $var(i) + 1;
        }}
    }}
    exit;
}}
"""


class OpenSIPS(Server):
    """A real OpenSIPS under `prefix` (sbin/opensips, lib64 or lib /opensips/modules),
    serving mqueue over httpd + mi_http with the same queues as ours and the peer."""

    label = "opensips"
    m_fetch, m_get_size, m_get_sizes = "mq_fetch", "mq_get_size", "mq_get_sizes"

    def __init__(self, prefix: Path, prefill: int) -> None:
        self.prefix = prefix
        self.prefill = prefill
        self.tmp = Path(tempfile.mkdtemp(prefix="mqmi-opensips-"))
        self.port = free_port()
        self.sip_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mi"
        self.pidfile = str(self.tmp / "opensips.pid")
        self.log = self.tmp / "opensips.log"
        self.cfg = self.tmp / "opensips.cfg"
        self.rpc = Rpc(self.url)
        self.proc: subprocess.Popen | None = None
        self.serial = 0

    def _mpath(self) -> Path:
        for lib in ("lib64", "lib", "lib/x86_64-linux-gnu"):
            path = self.prefix / lib / "opensips" / "modules"
            if (path / "mqueue.so").exists():
                return path
        raise RuntimeError(f"no opensips/modules/mqueue.so under {self.prefix}/lib*: "
                           "--opensips PREFIX is the prefix OpenSIPS was installed to, with "
                           "the httpd, mi_http, mqueue and proto_udp modules")

    def start(self) -> None:
        binary = self.prefix / "sbin" / "opensips"
        if not binary.exists():
            raise RuntimeError(f"--opensips {self.prefix}: no sbin/opensips there")
        queues = "\n".join(f'modparam("mqueue", "mqueue", "{q}")' for q in QUEUES)
        self.cfg.write_text(OPENSIPS_CFG.format(sip_port=self.sip_port, mpath=self._mpath(),
                                                port=self.port, queues=queues))
        logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "-F", "-f", str(self.cfg), "-P", self.pidfile, "-m", "512"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(self.tmp))
        logf.close()
        _wait_for(self.rpc, "mq_get_size", ["q1"], "opensips", self.proc, self.log)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        for q in ("q1", "q2"):
            self.add(q, self.prefill)

    def pid(self) -> int:  # the main process: the tree is its children
        return self.proc.pid if self.proc is not None else super().pid()

    def stop(self) -> None:
        self.rpc.close()
        _stop(self.proc, "opensips")
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def size(self, q: str) -> int:
        return self.rpc.call("mq_get_size", [q])["result"]["Queue"]["size"]

    def add(self, q: str, n: int) -> None:
        """n items added by the script (a SIP MESSAGE each 100,000), waited for."""
        want = self.size(q) + n
        limit = {"q2": 100_000}.get(q)
        if limit is not None:
            want = min(want, limit)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            done = 0
            while done < n:
                k = min(100_000, n - done)
                self.serial += 1
                msg = (f"MESSAGE sip:fill@127.0.0.1:{self.sip_port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{self.serial}\r\n"
                       "From: <sip:bench@127.0.0.1>;tag=1\r\nTo: <sip:fill@127.0.0.1>\r\n"
                       f"Call-ID: fill{self.serial}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
                       f"X-Queue: {q}\r\nX-Count: {k}\r\nContent-Length: 0\r\n\r\n")
                s.sendto(msg.encode(), ("127.0.0.1", self.sip_port))
                done += k
        deadline = time.monotonic() + 120
        while self.size(q) < want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"opensips: {q} holds {self.size(q)} items, not {want}")
            time.sleep(0.1)
