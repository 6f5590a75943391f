"""What can be checked about a valid configuration on this machine without starting it.

`machine_problems` are the mistakes start-up would fail on (or, for /dev/shm, fail on
later): `mi-server --check` reports them, one line each, and exits 1. `warnings` are
set-ups that work but are probably not what the operator wants: `--check` prints them,
and the server logs them at start.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

SHM_DIR = Path("/dev/shm")


def warnings(cfg: Any, syslog: bool = True) -> list[str]:
    """Start-up warnings (logged by the server, printed by --check).  `syslog` False
    leaves out the missing syslog socket (setup_logging says that one itself)."""
    found = []
    transports = [cfg.http, cfg.fifo, getattr(cfg, "datagram", None)]
    if all(t is None for t in transports):
        found.append("no transport is enabled (no http:, fifo: or datagram: section, or all "
                     "with enabled: false): nothing will answer MI commands")
    http = cfg.http
    if http is not None and http.auth is None and not _loopback(http.host):
        found.append(f"HTTP listens on {http.host}:{http.port}, beyond loopback, without "
                     "http.auth: anyone who can reach it can run every MI command "
                     "(mq_fetch, kill included)")
    if syslog and cfg.log_target == "syslog":
        from mi_server.runtime.logsetup import syslog_missing

        why = syslog_missing()
        if why is not None:
            found.append(f"log_target syslog: no syslog socket to log to ({why}): the "
                         "server will log to stderr instead")
    return found


def machine_problems(cfg: Any) -> list[str]:
    """One line per thing on this machine that stops (or will break) this configuration."""
    problems: list[str] = []
    problems += _fifo_problems(cfg)
    problems += _datagram_problems(cfg)
    problems += _handler_problems(cfg)
    problems += _shm_problems(cfg)
    problems += _storage_problems(cfg)
    return problems


def shm_room_problem(size: int, name: str | None = None) -> str | None:
    """shm_size against what /dev/shm can still hold (the arena file is sparse: memory is
    taken as items arrive, and a write beyond the tmpfs's room is a SIGBUS, not an error).
    An existing file under the arena's own name (a live or dead server's arena) counts as
    room: starting replaces or adopts it."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError as exc:
        return f"shm_size: {SHM_DIR} cannot be checked: {exc.strerror or exc}"
    free = st.f_bavail * st.f_frsize
    if name:
        try:
            free += os.stat(SHM_DIR / name).st_blocks * 512
        except OSError:
            pass
    if size > free:
        return (f"shm_size: {size} bytes is more than {SHM_DIR} can hold "
                f"({free // (1024 * 1024)} MiB free): the server would be killed (SIGBUS) "
                "when the arena fills up; lower shm_size or enlarge /dev/shm")
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def _fifo_problems(cfg: Any) -> list[str]:
    fifo = cfg.fifo
    if fifo is None:
        return []
    problems = []
    directory = Path(fifo.path).parent
    if not directory.is_dir():
        problems.append(f"fifo.path: the directory {directory} does not exist")
    elif not os.access(directory, os.W_OK | os.X_OK):
        problems.append(f"fifo.path: the directory {directory} is not writable by this user")
    else:
        problems += _fifo_path_problems(os.fspath(fifo.path))
    reply_dir = Path(fifo.reply_dir)
    if not reply_dir.is_dir():
        problems.append(f"fifo.reply_dir: {reply_dir} is not an existing directory")
    return problems


def _datagram_problems(cfg: Any) -> list[str]:
    dgram = getattr(cfg, "datagram", None)
    if dgram is None or not dgram.socket.is_unix:
        return []
    directory = Path(dgram.socket.path).parent
    if not directory.is_dir():
        return [f"datagram.socket: the directory {directory} does not exist"]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [f"datagram.socket: the directory {directory} is not writable by this user"]
    mode = directory.stat().st_mode
    if mode & 0o002 and not mode & 0o1000:
        return [f"datagram.socket: the directory {directory} is writable by everyone "
                "without the sticky bit (anyone could replace the socket)"]
    return []


def _fifo_path_problems(path: str) -> list[str]:
    """What the start would refuse at fifo.path itself (mi_fifo.fifofile.claim_fifo).  A
    FIFO a running server serves is not reported: --check is run beside the server it is
    about to replace."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return []  # nothing there: the start makes it
    if stat.S_ISDIR(st.st_mode):
        return [f"fifo.path: {path} is a directory"]
    if not stat.S_ISFIFO(st.st_mode):
        return [f"fifo.path: {path} exists and is not a FIFO (the start refuses to replace "
                "it: remove it or set another fifo.path)"]
    return []


def _handler_problems(cfg: Any) -> list[str]:
    from mi_server.runtime.consumers import HandlerError, resolve_handler

    problems = []
    for consumer in cfg.consumers:
        try:
            resolve_handler(consumer.handler, consumer.queue)
        except HandlerError as exc:
            problems.append(str(exc))
    return problems


def _shm_problems(cfg: Any) -> list[str]:
    engine = getattr(cfg, "engine", None)
    if engine is not None and getattr(engine, "backend", "shm") != "shm":
        return []  # the queues are not in this machine's /dev/shm
    problem = shm_room_problem(cfg.shm_size, getattr(cfg, "shm_name", None))
    return [problem] if problem else []


def _storage_problems(cfg: Any) -> list[str]:
    from mi_server.runtime import persistence
    from mi_server.storage.fallback import state_dir_problem
    from mi_server.storage.url import SqliteUrl, parse_db_url

    problems = []
    if cfg.db_url is not None:
        parsed = parse_db_url(cfg.db_url)
        if isinstance(parsed, SqliteUrl) and not parsed.path.parent.is_dir():
            problems.append(f"db_url: the directory {parsed.path.parent} of the SQLite file "
                            "does not exist (it is not created: create it, or fix the path)")
    if any(q.dbmode != 0 for q in cfg.queues):
        # the very check the fallback file's writer and reader refuse the directory by
        why = state_dir_problem(persistence.state_dir(cfg))
        if why is not None:
            problems.append(why)
    return problems
