"""A real FIFO listener in a forked process over the real MI core and a real engine Arena,
plus a minimal raw client (own reply FIFO, read until the server closes it)."""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_fifo import fastpath
from mi_fifo.fifofile import claim_fifo
from mi_fifo.listener import run_listener
from mi_server.config import FifoConfig
from mi_server.engine import Arena, QueueSpec
from mi_server.mi import MIContext, build_core


def _serve(cfg: FifoConfig, arena_name: str, compiled: bool, fast_calls, fd: int) -> None:
    # the listener reads the switch when it starts serving
    if compiled:
        os.environ.pop(fastpath.ENV, None)
    else:
        os.environ[fastpath.ENV] = "0"
    arena = Arena.attach(arena_name)
    core = build_core(MIContext(engine=arena, started=time.time()))
    stage_checked = core.stage_checked

    def counted(method, params, id_text):  # only the compiled fast path calls this
        fast_calls.value += 1
        return stage_checked(method, params, id_text)

    run_listener(cfg, core.handle, scan=core.scan_value, stage=core.stage, finish=core.finish,
                 stage_checked=counted, fd=fd)


@dataclass
class FifoServer:
    cfg: FifoConfig
    arena: Arena
    proc: multiprocessing.process.BaseProcess
    compiled: bool
    fast_calls: Any  # a shared int: requests the compiled fast path staged

    @property
    def fifo(self) -> Path:
        return Path(self.cfg.path)

    @property
    def reply_dir(self) -> Path:
        return Path(self.cfg.reply_dir)

    def stop(self) -> int | None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.join(10)
        if self.proc.is_alive():  # a hung listener must not outlive the test
            self.proc.kill()
            self.proc.join(5)
            return None
        return self.proc.exitcode

    def size(self, q: str = "q") -> int:
        return self.arena.size(q)


def start(tmp: Path, replies: Path | None = None, compiled: bool = True,
          **kw) -> FifoServer:
    """A listener on tmp/mi_fifo; reply FIFOs in `replies` (default: tmp/r).  `compiled`
    False: with the compiled fast path turned off (MQMI_FIFO_FASTPATH=0)."""
    if replies is None:
        replies = tmp / "r"
        replies.mkdir(exist_ok=True)
    cfg = FifoConfig(path=tmp / "mi_fifo", reply_dir=replies, **kw)
    arena = Arena.create(f"mqfifo_{os.getpid()}_{tmp.name}", 1 << 20,
                         [QueueSpec("q"), QueueSpec("big")])
    fd = claim_fifo(cfg)  # as the supervisor does; the listener inherits it through fork
    ctx = multiprocessing.get_context("fork")
    fast_calls = ctx.Value("q", 0, lock=False)  # written by the listener alone
    proc = ctx.Process(target=_serve, args=(cfg, arena.name, compiled, fast_calls, fd))
    proc.start()
    os.close(fd)
    return FifoServer(cfg, arena, proc, compiled, fast_calls)


def rpc(method: str, params, id_=1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": id_},
                      separators=(",", ":")).encode()


def send(server: FifoServer, data: bytes) -> None:
    fd = os.open(server.fifo, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_all(rfd: int, timeout: float) -> bytes | None:
    """Read until the writer closes; None when nothing complete came within `timeout`."""
    chunks: list[bytes] = []
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # Linux reports no HUP on a FIFO that never had a writer, so this waits for one
        if not poller.poll(left * 1000):
            continue
        data = os.read(rfd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def call(server: FifoServer, name: str, body: bytes, timeout: float = 10.0,
         raw: bytes | None = None) -> bytes | None:
    """One request with a fresh reply FIFO opened for reading before sending."""
    path = server.reply_dir / name
    os.mkfifo(path, 0o600)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        send(server, raw if raw is not None else b":%s:%s" % (name.encode(), body))
        return read_all(rfd, timeout)
    finally:
        os.close(rfd)
        os.unlink(path)


# The README's shell recipe: mkfifo a reply FIFO, start reading it, printf the request into
# the server's FIFO, wait for the reply.
SHELL_CLIENT = r"""
set -e
reply="$REPLY_DIR/$NAME"
rm -f "$reply"; mkfifo -m 0666 "$reply"
cat "$reply" &
printf ':%s:%s' "$NAME" "$REQ" > "$FIFO"
wait
rm -f "$reply"
"""


def shell_client(fifo: Path, reply_dir: Path, name: str, request: str) -> bytes:
    """What `cat` printed for one request sent by the shell recipe (bash must succeed)."""
    env = {**os.environ, "REPLY_DIR": str(reply_dir), "NAME": name, "REQ": request,
           "FIFO": str(fifo)}
    run = subprocess.run(["bash", "-c", SHELL_CLIENT], env=env, capture_output=True,
                         timeout=20)
    assert run.returncode == 0, run.stderr
    return run.stdout


class ReplyFifos:
    """Reply FIFOs, each opened for reading (as a waiting client has it)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.fds: dict[str, int] = {}

    def make(self, name: str) -> None:
        os.mkfifo(self.dir / name)
        self.fds[name] = os.open(self.dir / name, os.O_RDONLY | os.O_NONBLOCK)

    def got(self, name: str) -> bytes:
        try:
            return os.read(self.fds[name], 1 << 20)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
