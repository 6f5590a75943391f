"""A private redis-server for the tests that stop, restart or fill Redis: a free port, its
own directory, no persistence (so a restart is a Redis that lost everything, functions
included), started and stopped by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.serverproc import free_port

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, *extra: str,
                 bind: str = "127.0.0.1") -> None:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.bind = bind
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    def start(self, netns: str | None = None) -> RedisServer:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", self.bind, "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no",
                *self.extra]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.port, self.bind):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server did not start: "
                                     f"{(self.dir / 'redis.log').read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, both below 65536."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class RedisCluster:
    """Three masters (no replicas) on free ports, made into one cluster by
    `redis-cli --cluster create`, each in its own directory; stopped by stop()."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            pytest.skip("redis-cli is not installed")
        self.nodes = [RedisServer(Path(directory) / f"node{i}", cluster_port(),
                                  "--cluster-enabled",
                                  "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", "5000")
                      for i in range(masters)]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        out = subprocess.run(["redis-cli", "--cluster", "create", *self.addresses,
                              "--cluster-replicas", "0", "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            self.stop()
            raise AssertionError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        deadline = time.monotonic() + 30
        for node in self.nodes:  # every node must agree the cluster is up
            while b"cluster_state:ok" not in _command(node.port, b"CLUSTER INFO"):
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("the cluster did not come up")
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _command(port: int, inline: bytes) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(inline + b"\r\n")
            time.sleep(0.05)
            return s.recv(65536)
    except OSError:
        return b""
