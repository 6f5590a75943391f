"""Run the real server (`python -m mi_server -c cfg.yaml`) as a subprocess and talk to it.

Every server gets a private directory (config, FIFO, reply FIFOs, pid file, stderr log)
and a free port; nothing is shared with the user's /tmp/opensips_fifo or port 8888.
"""

from __future__ import annotations

import errno
import http.client
import itertools
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
_reply_names = itertools.count(1)


def free_port() -> int:
    """A TCP port nothing listens on right now (never the user's 8888)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MIError(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


class Server:
    """One server instance; `start()` waits until every process answers in `ps`."""

    def __init__(self, directory: Path, port: int, *, queues: list[Any] | None = None,
                 workers: int = 2, fifo: bool = True, db_url: str | None = None,
                 consumers: list[dict] | None = None, pid_file: bool = True,
                 env: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                 launcher: list[str] | None = None) -> None:
        self.dir = Path(directory)
        self.port = port
        self.workers = workers
        self.fifo_path = self.dir / "mi_fifo" if fifo else None
        self.pid_file = self.dir / "server.pid" if pid_file else None
        self.config_path = self.dir / "server.yaml"
        self.stderr_path = self.dir / "stderr.log"
        self.consumers = consumers or []
        self.env = dict(os.environ, **(env or {}))
        self.launcher = launcher or []  # a command that exec()s the server (its pid stays)
        self.proc: subprocess.Popen | None = None
        config: dict[str, Any] = {
            "mqueue": queues if queues is not None else ["name=q1", "name=q2"],
            "http": {"listen": f"127.0.0.1:{port}", "workers": workers},
            "log_level": "info",
        }
        if fifo:
            config["fifo"] = {"path": str(self.fifo_path), "reply_dir": str(self.dir)}
        if db_url:
            config["db_url"] = db_url
        if consumers:
            config["consumers"] = consumers
        if pid_file:
            config["pid_file"] = str(self.pid_file)
        config.update(extra or {})
        self.config = config

    # ---- life ------------------------------------------------------------------------

    def expected_processes(self) -> int:
        n = 1 + self.workers + (1 if self.fifo_path else 0)
        n += 1 if self.config.get("datagram") else 0
        return n + sum(c.get("processes", 1) for c in self.consumers)

    def launch(self) -> subprocess.Popen:
        """Start the process without waiting for it to be ready."""
        self.config_path.write_text(yaml.safe_dump(self.config))
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [*self.launcher, sys.executable, "-m", "mi_server", "-c",
                 str(self.config_path)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err,
            )
        return self.proc

    def start(self) -> Server:
        self.launch()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr()}")
            try:
                if len(self.ps()) == self.expected_processes():
                    return self
            except (OSError, http.client.HTTPException, MIError, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server not ready in {START_TIMEOUT} s: {self.stderr()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and wait (bounded) for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not stop in {STOP_TIMEOUT} s") from None

    def kill(self) -> None:
        """Last resort for a test that failed: kill the whole process tree."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self._remove_own_arena()  # killed by the test, or kept at a failed stop
            return
        children = children_of(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # A killed supervisor cannot unlink its arena: do it for it (64 MB of /dev/shm).
        Path(f"/dev/shm/{self.shm_name}").unlink(missing_ok=True)

    def _remove_own_arena(self) -> None:
        """Unlink the arena under shm_name if this (dead) server created it: never one a
        later server of the same test adopted (its header names that server)."""
        from mi_server.engine.shm.layout import H_OWNER_PID

        path = Path(f"/dev/shm/{self.shm_name}")
        try:
            with open(path, "rb") as f:
                f.seek(H_OWNER_PID * 8)
                owner = int.from_bytes(f.read(8), "little")
        except OSError:
            return
        if owner == self.proc.pid:
            path.unlink(missing_ok=True)

    @property
    def shm_name(self) -> str:
        """The arena's name: the configured shm_name, else the one derived from the
        configuration file's path (unique per test: the file is in the test's directory)."""
        from mi_server.config import default_shm_name

        return self.config.get("shm_name") or default_shm_name(self.config_path)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- MI --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mi"

    @property
    def reply_dir(self) -> Path:
        return self.dir

    @property
    def fifo(self) -> Path | None:  # the name tests/fifo/fifoserver.call expects
        return self.fifo_path

    def post(self, body: bytes, headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
        """One raw HTTP POST to the MI root: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", "/mi", body, {"Content-Type": "application/json",
                                               "Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def request(self, method: str, params: Any = None, timeout: float = 10.0) -> dict:
        """The whole JSON-RPC reply of an HTTP MI call."""
        body = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            body["params"] = params
        status, data = self.post(json.dumps(body).encode(), timeout=timeout)
        if status != 200:
            raise ValueError(f"HTTP {status}: {data!r}")
        return json.loads(data)

    def mi(self, method: str, params: Any = None) -> Any:
        """The `result` of an HTTP MI call; MIError for an `error` reply."""
        reply = self.request(method, params)
        if "error" in reply:
            raise MIError(reply["error"])
        return reply["result"]

    def fifo_mi(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        """The `result` of a FIFO MI call, the way opensips-cli makes one."""
        assert self.fifo_path is not None
        name = f"r{os.getpid()}_{next(_reply_names)}"
        reply_path = self.dir / name
        os.mkfifo(reply_path, 0o666)
        try:
            rfd = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                body = {"jsonrpc": "2.0", "method": method, "id": "1",
                        "params": params if params is not None else {}}
                # the FIFO exists before its listener has opened it (the supervisor makes
                # it first): no reader yet is ENXIO, where a blocking open would wait
                wfd = wait_for(lambda: _open_writer(self.fifo_path), timeout,
                               "the FIFO listener to open its FIFO")
                try:
                    os.write(wfd, f":{name}:{json.dumps(body)}".encode())
                finally:
                    os.close(wfd)
                data = _read_line(rfd, timeout)
            finally:
                os.close(rfd)
        finally:
            reply_path.unlink()
        reply = json.loads(data)
        if "error" in reply:
            raise MIError(reply["error"])
        return reply["result"]

    def ps(self) -> list[dict]:
        return self.mi("ps")["Processes"]

    def pids_by_type(self) -> dict[str, int]:
        return {p["Type"]: p["PID"] for p in self.ps()}

    def add(self, queue: str, key: str, value: str) -> None:
        assert self.mi("mq_add", {"name": queue, "key": key, "value": value}) == "OK"

    def fetch_all(self, queue: str) -> list[tuple[str, str]]:
        items = self.mi("mq_fetch", {"name": queue, "limit": 1_000_000})
        return [(i["key"], i["value"]) for i in items]

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


# Runs "$@" with a private /dev: an overlay of the real one (so every device is there) with
# the real /dev/shm moved back on top (the arena is where it always is), in which /dev/log
# is the symlink $DEV_LOG, or absent when DEV_LOG is empty.  Needs root (a mount namespace).
_PRIVATE_DEV = r"""
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs "$PRIVATE"
mkdir "$PRIVATE/up" "$PRIVATE/work" "$PRIVATE/shm"
mount --bind /dev/shm "$PRIVATE/shm"
mount -t overlay overlay -o "lowerdir=/dev,upperdir=$PRIVATE/up,workdir=$PRIVATE/work" /dev
mount --move "$PRIVATE/shm" /dev/shm
rm -f /dev/log
if [ -n "$DEV_LOG" ]; then ln -s "$DEV_LOG" /dev/log; fi
exec "$@"
"""


def private_dev_log(private: Path, dev_log: Path | None) -> tuple[list[str], dict[str, str]]:
    """(launcher, env) that run a command where /dev/log is `dev_log` (a socket the test
    binds) or does not exist, without touching the machine's /dev; pytest.skip unless
    this can be done (root, unshare, overlayfs)."""
    import pytest

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a mount namespace)")
    private.mkdir(exist_ok=True)
    env = {"PRIVATE": str(private), "DEV_LOG": str(dev_log or "")}
    launcher = ["unshare", "--mount", "sh", "-c", _PRIVATE_DEV, "sh"]
    probe = subprocess.run([*launcher, "true"], env=dict(os.environ, **env),
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no private /dev here: {probe.stderr.decode(errors='replace')}")
    return launcher, env


def _open_writer(path: Path) -> int | None:
    """A non-blocking write end of the FIFO at `path`, or None while it has no reader."""
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise


def _read_line(fd: int, timeout: float) -> bytes:
    """Read one reply line from a FIFO; bounded by `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no FIFO reply in {timeout} s (got {data!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if data:
                break  # the writer closed after a reply without a newline
            time.sleep(0.01)  # a writer came and went without data; keep waiting
            continue
        data += chunk
    return data


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (no psutil needed)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, http.client.HTTPException, MIError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---- database helpers -------------------------------------------------------------------

class Db:
    """Direct SQL on the test database, to prepare and inspect queue tables."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tables: list[str] = []

    def table_name(self) -> str:
        name = f"rt_{uuid.uuid4().hex[:12]}"
        self.tables.append(name)
        return name

    def connect(self) -> Any:
        if self.url.startswith("sqlite://"):
            path = self.url[len("sqlite://"):]
            return sqlite3.connect(path)
        import pymysql

        p = urlsplit(self.url)
        return pymysql.connect(host=p.hostname, port=p.port or 3306, user=unquote(p.username or ""),
                               password=unquote(p.password or ""), database=p.path.lstrip("/"),
                               autocommit=True)

    def q(self, name: str) -> str:
        return f'"{name}"' if self.url.startswith("sqlite://") else f"`{name}`"

    def execute(self, sql: str, args: Any = ()) -> list[tuple]:
        sql = sql if self.url.startswith("sqlite://") else sql.replace("?", "%s")
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, args)
            rows = list(cur.fetchall())
            conn.commit()
            return rows
        finally:
            conn.close()

    def create(self, name: str | None = None) -> str:
        name = name or self.table_name()
        from mi_server.storage import open_storage

        assert open_storage(self.url).create_table(name)
        return name

    def insert(self, table: str, rows: list[tuple[str, str]]) -> None:
        for key, val in rows:
            self.execute(f"INSERT INTO {self.q(table)} ({self.q('key')}, {self.q('val')}) "
                         "VALUES (?, ?)", (key, val))

    def rows(self, table: str) -> list[tuple[str, str]]:
        got = self.execute(f"SELECT {self.q('key')}, {self.q('val')} FROM {self.q(table)} "
                           f"ORDER BY {self.q('id')}")
        return [(k, v) for k, v in got]

    def drop_all(self) -> None:
        for name in self.tables:
            try:
                self.execute(f"DROP TABLE IF EXISTS {self.q(name)}")
            except Exception:  # noqa: BLE001 - cleanup of a database that may be gone
                pass


def closed_port_mysql_url() -> str:
    """A MySQL URL nothing answers on: the database is 'down'."""
    return f"mysql://root@127.0.0.1:{free_port()}/test"


def shm_exists(server_or_name: Server | str) -> bool:
    """Whether the arena of a Server (or of that shm_name) is under /dev/shm."""
    name = server_or_name if isinstance(server_or_name, str) else server_or_name.shm_name
    return Path(f"/dev/shm/{name}").exists()
