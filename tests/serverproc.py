"""Start a real `mi-server` process on private paths and a free port, for end-to-end tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A running server: its config, paths, and helpers to talk to it."""

    workdir: Path
    queues: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)
    http_workers: int = 2
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def fifo_path(self) -> Path:
        return self.workdir / "mi_fifo"

    @property
    def fifo(self) -> Path:  # the name tests/fifo/fifoserver.call expects
        return self.fifo_path

    @property
    def reply_dir(self) -> Path:
        return self.workdir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mi"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.yaml"

    def write_config(self) -> None:
        if not self.port:
            self.port = free_port()
        cfg: dict[str, Any] = {
            "shm_size": "16M",
            "mqueue": self.queues,
            "http": {"listen": f"127.0.0.1:{self.port}", "workers": self.http_workers},
            "fifo": {"path": str(self.fifo_path), "reply_dir": f"{self.reply_dir}/"},
            "pid_file": str(self.workdir / "server.pid"),
            "log_level": "info",
        }
        cfg.update(self.extra)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def start(self, timeout: float = 15.0) -> ServerProcess:
        self.write_config()
        self.log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mi_server", "-c", str(self.config_path)],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.read_log()}")
            if self.fifo_path.exists() and self._http_answers():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not come up:\n{self.read_log()}")

    def _http_answers(self) -> bool:
        try:
            self.call("which", {})
            return True
        except OSError:
            return False

    def read_log(self) -> str:
        p = self.workdir / "server.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            sent = {"Content-Type": "application/json", **(headers or {})}
            conn.request("POST", "/mi", body, sent)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            req["params"] = params
        status, body = self.post(json.dumps(req).encode())
        assert status == 200, (status, body)
        return json.loads(body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc
