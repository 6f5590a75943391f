"""The supervisor: one server instance, like an OpenSIPS attendant process.

It owns processes and signals, nothing else:
1. set-up, before any fork, so that a mistake fails fast with one clear line and exit 1:
   bind HTTP, create the FIFO, resolve consumer handlers, open the queue engine (create
   the shared arena, or connect to Redis), load the dbmode queues that load at start,
   write the pid file;
2. fork the HTTP workers, the FIFO listener and the consumers (os.fork: the arena mapping
   and the listening socket are inherited as they are; Redis connections are re-opened
   by each child);
3. supervise: restart a child that dies, with back-off, and keep the `ps` table current;
4. on SIGTERM/SIGINT/SIGHUP stop in order: the transports (they finish in-flight
   requests), then the consumers (they finish the item in hand), SIGKILL whatever is
   still there after a grace period, save the dbmode queues, remove the FIFO, unlink the
   arena (queues in Redis stay), remove the pid file, exit 0.

The supervisor keeps its stop signals and SIGCHLD blocked and takes them with
sigtimedwait, so no handler ever runs in the middle of the save: a second SIGTERM during
shutdown simply stays pending and is dropped at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mi_server.engine import backend
from mi_server.engine.contract import Engine
from mi_server.runtime import persistence
from mi_server.runtime.backoff import Backoff
from mi_server.runtime.consumers import (
    AtLeastOnce,
    Handler,
    HandlerError,
    resolve_handler,
    run_consumer,
)
from mi_server.runtime.dbprobe import DatabaseProbe
from mi_server.runtime.osproc import set_parent_death_signal, set_process_title
from mi_server.runtime.pidfile import PidFile, claim_pid_file
from mi_server.runtime.proctable import ProcessEntry, read_table, write_table
from mi_server.runtime.readiness import Readiness
from mi_server.runtime.statusboard import (
    CORE,
    MAIN,
    SR_NOT_READY,
    SR_READY,
    STATE_RUNNING,
    STATE_TERMINATING,
    BoardReader,
    StatusBoard,
)

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
WAITED_SIGNALS = STOP_SIGNALS | {signal.SIGCHLD}
STOP_GRACE = 5.0  # seconds each group of children gets to finish before SIGKILL
IDLE_WAKEUP = 1.0  # the supervise loop looks around at least this often
# how often the database of the queues that save at stop is probed for the status report
# (in a child process: runtime/dbprobe.py)
DB_CHECK_INTERVAL = float(os.environ.get("MQMI_DB_CHECK_INTERVAL", "30"))


class StartupError(Exception):
    """Set-up failed; the message is the one line the user sees."""


@dataclass
class ChildSpec:
    """One supervised process: its `ps` row, its short title, what it runs."""

    id: int
    type: str  # the `ps` description, e.g. "HTTP worker 1"
    title: str  # the kernel's 15-character process name, e.g. "mi-http-1"
    run: Callable[[], None]
    consumer: bool = False  # consumers stop after the transports
    # the status report group of the transport this process serves (its readiness is
    # whether all the group's processes are up), e.g. "mi_http"; None for consumers
    sr_group: str | None = None
    accepts_http: bool = False  # only HTTP workers keep the listening socket
    serves_datagram: bool = False  # only the datagram listener keeps its socket
    serves_fifo: bool = False  # only the FIFO listener keeps the FIFO (and its lock)


@dataclass
class Slot:
    """A ChildSpec and the state of its current incarnation."""

    spec: ChildSpec
    pid: int = 0  # 0 while not running
    started: float = 0.0  # monotonic time of the last fork
    restart_at: float | None = None  # monotonic time of a pending restart
    backoff: Backoff = field(default_factory=Backoff)


def run_server(cfg: Any, argv: list[str]) -> int:
    """Run one server instance in the foreground until it is told to stop; the exit code."""
    from mi_server import checks
    from mi_server.runtime.logsetup import setup_logging

    setup_logging(cfg.log_level, cfg.log_target)  # says so itself if syslog is missing
    for line in checks.warnings(cfg, syslog=False):
        log.warning("%s", line)
    if getattr(cfg.engine, "backend", "shm") == "shm":
        room = checks.shm_room_problem(cfg.shm_size, cfg.shm_name)
        if room is not None:
            log.warning("%s", room)
    return Supervisor(cfg, argv).run()


class Supervisor:
    def __init__(self, cfg: Any, argv: list[str]) -> None:
        self.cfg = cfg
        self.argv = list(argv)
        self.pid = os.getpid()
        self.started = time.time()
        self.sock: Any = None
        self.datagram: Any = None  # mi_server.datagram.sockets.BoundSocket
        self.fifo_fd = -1  # the claimed FIFO, its lock held for the server's life
        self.engine: Engine | None = None
        self.adopted = 0  # items adopted from the arena of a server that died
        self.runtime_dir: Path | None = None
        self.table_path: Path | None = None
        self.pid_file: PidFile | None = None  # claimed, its lock held for the server's life
        self.handlers: dict[str, Handler] = {}
        self.slots: list[Slot] = []
        self.by_pid: dict[int, Slot] = {}
        self.old_mask: set[signal.Signals] = set()
        self.board: StatusBoard | None = None
        self.board_path: Path | None = None
        self.db_checked_at = 0.0  # monotonic time of the last database probe
        self.db_probe: DatabaseProbe | None = None  # the periodic one, in a child process
        self.readiness: Readiness | None = None  # systemd's READY=1 / STOPPING=1

    # ---- the whole life --------------------------------------------------------------

    def run(self) -> int:
        # Blocked from the very start: a SIGTERM during set-up waits for the main loop.
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED_SIGNALS)
        # A handler (not SIG_DFL) so that SIGCHLD is never discarded while blocked.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        loaded: list[str] = []
        try:
            self._set_up(loaded)
        except Exception as exc:  # whatever failed, rows deleted by the load go back
            if isinstance(exc, StartupError):
                log.error("%s", exc)
            else:
                log.exception("set-up failed")
            self._give_back(loaded)
            self._clean_up()
            return 1
        log.info("started: %s", self._summary())
        self.readiness = Readiness.for_server(self.cfg, self.sock)  # before any fork
        for slot in self.slots:
            self._spawn(slot)
        self._update_transports()
        self._set_core(STATE_RUNNING, "running", "initialization completed, ready now")
        why = self._supervise()
        log.info("stopping (%s)", why)
        if self.db_probe is not None:
            self.db_probe.stop()
        # Not ready from the first moment of the stop: probes see it while the transports
        # finish their requests (no report, as OpenSIPS's shutdown adds none).
        self._set_core(STATE_TERMINATING, "shutting down")
        self.readiness.stopping()
        return self._shut_down()

    # ---- set-up (no fork yet) --------------------------------------------------------

    def _set_up(self, loaded: list[str]) -> None:
        cfg = self.cfg
        # First, so that the status report says "initializing" for the whole set-up.
        prefix = f"mqueue-mi-{self.pid}-"
        self.runtime_dir = Path(_attempt(lambda: tempfile.mkdtemp(prefix=prefix),
                                         "cannot create the runtime directory"))
        self.table_path = self.runtime_dir / "processes.json"
        self.board_path = self.runtime_dir / "status.json"
        self.board = _attempt(lambda: StatusBoard(self.board_path),
                              "cannot write the status report")
        # Before anything that another instance could be using (port, FIFO, arena, rows):
        # a running server holding this pid file refuses the start here.
        if cfg.pid_file is not None:
            self.pid_file = _attempt(lambda: claim_pid_file(Path(cfg.pid_file)),
                                     f"cannot write the pid file {cfg.pid_file}")
        if cfg.http is not None:
            self.sock = _attempt(lambda: _bind(cfg.http),
                                 f"cannot listen on {cfg.http.host}:{cfg.http.port}")
        if cfg.fifo is not None:
            self.fifo_fd = _attempt(lambda: _claim_fifo(cfg.fifo),
                                    f"cannot create the FIFO {cfg.fifo.path}")
        if cfg.datagram is not None:
            self.datagram = _attempt(lambda: _bind_datagram(cfg.datagram),
                                     f"cannot bind the datagram socket {cfg.datagram.socket}")
        for consumer in cfg.consumers:
            if consumer.handler not in self.handlers:
                try:
                    self.handlers[consumer.handler] = resolve_handler(consumer.handler,
                                                                      consumer.queue)
                except HandlerError as exc:
                    raise StartupError(str(exc)) from None
        _attempt(lambda: persistence.prepare_state_dir(cfg), "state directory")
        self.engine = _attempt(self._open_engine, "cannot open the queue engine")
        try:
            persistence.load_queues(self.engine, cfg, loaded)
            persistence.check_save_tables(cfg)
        except persistence.LoadFailed as exc:
            raise StartupError(str(exc)) from None
        self.slots = [Slot(spec) for spec in self._child_specs()]
        self._write_table()
        self._register_status()
        _share_with_children()  # last: whatever set-up allocated is shared too

    def _create_arena(self) -> Engine:
        """A fresh arena under cfg.shm_name, or the adopted one of a server that died."""
        from mi_server.runtime.adoption import ArenaInUse, ArenaNotOurs, start_arena

        try:
            arena, self.adopted = start_arena(self.cfg, persistence.state_dir(self.cfg))
        except (ArenaInUse, ArenaNotOurs) as exc:
            raise StartupError(str(exc)) from None
        return arena

    def _open_engine(self) -> Engine:
        from mi_server.engine.errors import EngineUnavailable

        cfg = self.cfg
        try:
            return backend.open_engine(cfg.engine, cfg.queues, open_shm=self._create_arena)
        except EngineUnavailable as exc:
            raise StartupError(f"cannot open the queue engine: {exc}") from None

    def _child_specs(self) -> list[ChildSpec]:
        cfg = self.cfg
        specs: list[ChildSpec] = []
        next_id = 1  # 0 is the attendant (this process)
        if cfg.http is not None:
            for n in range(1, cfg.http.workers + 1):
                specs.append(ChildSpec(next_id, f"HTTP worker {n}", f"mi-http-{n}",
                                       self._http_worker, accepts_http=True,
                                       sr_group="mi_http"))
                next_id += 1
        if cfg.fifo is not None:
            specs.append(ChildSpec(next_id, "MI FIFO", "mi-fifo", self._fifo_listener,
                                   sr_group="mi_fifo", serves_fifo=True))
            next_id += 1
        if cfg.datagram is not None:
            specs.append(ChildSpec(next_id, "MI Datagram", "mi-datagram",
                                   self._datagram_listener, sr_group="mi_datagram",
                                   serves_datagram=True))
            next_id += 1
        for consumer in cfg.consumers:
            for n in range(1, consumer.processes + 1):
                name = f"consumer {consumer.queue} #{n}"
                specs.append(ChildSpec(next_id, name, f"mi-c-{consumer.queue}"[:13] + f"-{n}",
                                       _consumer_target(self.engine, consumer,
                                                        self.handlers[consumer.handler], name),
                                       consumer=True))
                next_id += 1
        return specs

    def _summary(self) -> str:
        cfg = self.cfg
        assert self.engine is not None
        parts = [f"{len(cfg.queues)} queue(s) in {backend.describe(self.engine)}"]
        if cfg.http is not None:
            parts.append(f"HTTP {cfg.http.host}:{cfg.http.port}/{cfg.http.root} "
                         f"({cfg.http.workers} worker(s))")
        if cfg.fifo is not None:
            parts.append(f"FIFO {cfg.fifo.path}")
        if cfg.datagram is not None:
            parts.append(f"datagram {cfg.datagram.socket}")
        n = sum(c.processes for c in cfg.consumers)
        if n:
            parts.append(f"{n} consumer process(es)")
        return ", ".join(parts)

    # ---- what the children run -------------------------------------------------------

    def _core(self) -> Any:
        """The MI core of one child process, answering over this server's engine."""
        from mi_server.mi import build_core

        return build_core(self._context())

    def _context(self) -> Any:
        from mi_server.mi.context import MIContext

        assert self.board_path is not None
        return MIContext(engine=self.engine, started=self.started, argv=self.argv,
                         processes=self._processes, stop=self._request_stop,
                         status=BoardReader(self.board_path))

    def _processes(self) -> list[Any]:
        from mi_server.mi.context import ProcessInfo

        assert self.table_path is not None
        return [ProcessInfo(e.id, e.pid, e.type) for e in read_table(self.table_path)]

    def _request_stop(self) -> None:
        """MI `kill`: the supervisor stops everything as on SIGTERM."""
        os.kill(self.pid, signal.SIGTERM)

    def _http_worker(self) -> None:
        from mi_server.http import run_worker
        from mi_server.mi import compiled

        core = self._core()
        run_worker(self.sock, core.handle, self.cfg.http, web=self._web_page(core),
                   monitor=self._monitor_pages(), checked=core.run_checked,
                   commands=compiled.load(core))

    def _monitor_pages(self) -> Any:
        """GET /metrics and /health (mi_server.monitoring), or None where both are off."""
        http = self.cfg.http
        if http.metrics is None and http.health is None:
            return None
        from mi_server.http.app import credentials_checker
        from mi_server.monitoring.pages import MonitorPages

        return MonitorPages(self._context(), http.metrics, http.health,
                            credentials_checker(http.auth))

    def _web_page(self, core: Any) -> Any:
        """The web page for people (mi_server.web), or None where it is turned off."""
        html = self.cfg.http.html
        if html is None:
            return None
        from mi_server.web import make_web_app
        from mi_server.web.app import WebSettings

        return make_web_app(core.handle, core.registry,
                            WebSettings(html.root, html.side_effects, html.secret),
                            self.cfg.queues)

    def _fifo_listener(self) -> None:
        from mi_fifo import run_listener

        core = self._core()
        assert self.engine is not None
        # The compiled path holds an mq_fetch's removal pending across the reply FIFO's
        # open, which pays where the engine stays locked meanwhile (shm); elsewhere the
        # Python path serves every request.
        checked = (core.stage_checked if backend.holds_lock_while_pending(self.engine)
                   else None)
        # the supervisor's descriptor (inherited through fork): the same open FIFO and its
        # lock, so a restarted listener serves the pipe its predecessor left, unread bytes
        # included, and the FIFO stays locked while no listener runs
        run_listener(self.cfg.fifo, core.handle, scan=core.scan_value, stage=core.stage,
                     finish=core.finish, stage_checked=checked, fd=self.fifo_fd)

    def _datagram_listener(self) -> None:
        from mi_server.datagram.server import run_listener

        core = self._core()
        run_listener(self.datagram.sock, core, self.cfg.datagram.buffer_size,
                     str(self.cfg.datagram.socket))

    # ---- the status report (sr_* commands, GET /health) -------------------------------

    def _register_status(self) -> None:
        """Our identifiers beside core/main: one group per transport (ready while all its
        processes are up), and `mqueue` with one identifier per queue that saves to the
        database at stop (ready while the database answers)."""
        assert self.board is not None
        for group in dict.fromkeys(s.spec.sr_group for s in self.slots if s.spec.sr_group):
            self.board.register(group, MAIN, SR_NOT_READY, "starting")
        if self._db_queues():
            for name in self._db_queues():
                self.board.register("mqueue", name, SR_NOT_READY, "database not checked yet")
            self._check_database()

    def _db_queues(self) -> list[str]:
        return [q.name for q in self.cfg.queues if q.saves_at_stop]

    def _check_database(self) -> None:
        """Probe the database of the queues that save at stop, here and now (at set-up,
        before any child runs); each identifier says whether its table answers."""
        self.db_checked_at = time.monotonic()
        self._show_database(persistence.probe_save_tables(self.cfg))

    def _probe_database(self, now: float) -> None:
        """The periodic probe, forked (runtime/dbprobe.py): a database host that never
        answers must not hold up the loop.  Its result is shown once it is in."""
        if self.db_probe is None:
            cfg = self.cfg
            self.db_probe = DatabaseProbe(lambda: persistence.probe_save_tables(cfg),
                                          self._db_queues())
        result = self.db_probe.poll()
        if result is not None:
            self._show_database(result)
        if not self.db_probe.running and now - self.db_checked_at >= DB_CHECK_INTERVAL:
            self.db_checked_at = now
            self.db_probe.start()

    def _show_database(self, problems: dict[str, str | None]) -> None:
        assert self.board is not None
        for name, problem in problems.items():
            if problem is None:
                self.board.set_status("mqueue", name, SR_READY, "database reachable")
            else:
                self.board.set_status("mqueue", name, SR_NOT_READY,
                                      f"database unreachable: {problem}")

    def _update_transports(self) -> None:
        """Each transport group: ready when every one of its processes is running."""
        if self.board is None:
            return
        groups: dict[str, list[Slot]] = {}
        for slot in self.slots:
            if slot.spec.sr_group:
                groups.setdefault(slot.spec.sr_group, []).append(slot)
        for group, slots in groups.items():
            down = sum(1 for s in slots if not s.pid)
            if down:
                self.board.set_status(group, MAIN, SR_NOT_READY,
                                      f"{down} of {len(slots)} process(es) down, restarting")
            else:
                self.board.set_status(group, MAIN, SR_READY, "running")

    def _set_core(self, status: int, details: str, report: str | None = None) -> None:
        if self.board is None:
            return
        _quietly(lambda: self.board.set_status(CORE, MAIN, status, details),
                 "writing the status report")
        if report is not None:
            _quietly(lambda: self.board.add_report(CORE, MAIN, report),
                     "writing the status report")

    # ---- processes -------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        slot.restart_at = None
        pid = os.fork()
        if pid == 0:
            self._child(slot.spec)  # never returns
        slot.pid, slot.started = pid, time.monotonic()
        self.by_pid[pid] = slot
        self._write_table()
        log.debug("%s started, pid %d", slot.spec.type, pid)

    def _child(self, spec: ChildSpec) -> None:
        """In the forked child: reset what belongs to the supervisor, run, never return."""
        code = 0
        try:
            for sig in WAITED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
            set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != self.pid:  # the supervisor died before the line above
                os._exit(0)
            set_process_title(spec.title)
            if self.sock is not None and not spec.accepts_http:
                self.sock.close()
            if self.datagram is not None and not spec.serves_datagram:
                self.datagram.close()
            # the locks must not outlive the server in a child
            if self.fifo_fd >= 0 and not spec.serves_fifo:
                os.close(self.fifo_fd)
            if self.pid_file is not None:
                os.close(self.pid_file.fd)
            spec.run()
        except BaseException:  # whatever happens, the child must not return into the loop
            log.exception("%s (pid %d) failed", spec.type, os.getpid())
            code = 1
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)

    def _supervise(self) -> str:
        """Reap, restart, wait; returns the name of the signal that asked to stop."""
        while True:
            self._reap(restart=True)
            now = time.monotonic()
            pending = [s for s in self.slots if s.restart_at is not None]
            for slot in pending:
                if slot.restart_at is not None and slot.restart_at <= now:
                    log.info("restarting %s", slot.spec.type)
                    self._spawn(slot)
            self._update_transports()
            if self._db_queues():
                self._probe_database(now)
            due = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min([IDLE_WAKEUP, *(t - now for t in due)]))
            if self.readiness is not None:
                timeout = self.readiness.poll(timeout)
            info = signal.sigtimedwait(WAITED_SIGNALS, timeout)
            if info is not None and info.si_signo in STOP_SIGNALS:
                return signal.Signals(info.si_signo).name

    def _reap(self, restart: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.by_pid.pop(pid, None)
            if slot is None:
                continue
            slot.pid = 0
            how = _describe_status(status)
            if not restart:
                log.debug("%s (pid %d) %s", slot.spec.type, pid, how)
                continue
            delay = slot.backoff.next_delay(time.monotonic() - slot.started)
            slot.restart_at = time.monotonic() + delay
            log.warning("%s (pid %d) %s; restarting in %.1f s", slot.spec.type, pid, how, delay)
            self._write_table()

    def _write_table(self) -> None:
        if self.table_path is None:
            return
        rows = [ProcessEntry(0, self.pid, "attendant")]
        rows += [ProcessEntry(s.spec.id, s.pid, s.spec.type) for s in self.slots if s.pid]
        write_table(self.table_path, rows)

    # ---- stopping --------------------------------------------------------------------

    def _shut_down(self) -> int:
        for slot in self.slots:
            slot.restart_at = None
        # Transports first: no new request is taken once the consumers begin to stop.
        self._stop_group([s for s in self.slots if not s.spec.consumer])
        self._stop_group([s for s in self.slots if s.spec.consumer])
        lost: list[str] = []
        saved = persistence.save_queues(self.engine, self.cfg, lost=lost)
        if lost and backend.is_shared_memory(self.engine):
            self._keep_for_adoption(lost)
        self._clean_up()
        log.info("stopped")
        return 0 if saved else 1

    def _keep_for_adoption(self, unsaved: list[str]) -> None:
        """Neither the database nor the fallback file took these queues: keep the arena
        with their items alone (the other queues emptied, as a stop empties them), so the
        next start with this configuration adopts them instead of losing them."""
        engine = self.engine
        assert engine is not None
        for spec in self.cfg.queues:
            if spec.name not in unsaved:
                engine.fetch_many(spec.name, 1 << 62)
        log.error("arena %s kept in /dev/shm with the items of queue(s) %s: the next start "
                  "with this configuration adopts them", engine.name,  # type: ignore[attr-defined]
                  ", ".join(f"'{n}'" for n in unsaved))
        engine.close()
        self.engine = None

    def _stop_group(self, slots: list[Slot]) -> None:
        """SIGTERM, wait up to STOP_GRACE, then SIGKILL whatever is left, and reap it."""
        live = [s for s in slots if s.pid]
        for slot in live:
            _signal(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while any(s.pid for s in live):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            signal.sigtimedwait({signal.SIGCHLD}, min(left, IDLE_WAKEUP))
            self._reap(restart=False)
        for slot in live:
            if slot.pid:
                log.warning("%s (pid %d) did not stop in %.0f s: killed", slot.spec.type,
                            slot.pid, STOP_GRACE)
                _signal(slot.pid, signal.SIGKILL)
                try:
                    os.waitpid(slot.pid, 0)
                except ChildProcessError:
                    pass
                self.by_pid.pop(slot.pid, None)
                slot.pid = 0

    def _give_back(self, loaded: list[str]) -> None:
        """Set-up failed after some queues were loaded (their rows deleted): save them back.
        An arena holding adopted items is kept for the next start to adopt again, without
        the queues just saved back (they would come twice)."""
        lost: list[str] = []
        if loaded and self.engine is not None:
            persistence.save_queues(self.engine, self.cfg, loaded, lost)  # empties the saved
        if self.adopted and self.engine is not None:
            log.warning("arena %s kept with its adopted items for the next start",
                        self.engine.name)  # type: ignore[attr-defined]
            self.engine.close()
            self.engine = None
        elif lost and self.engine is not None and backend.is_shared_memory(self.engine):
            self._keep_for_adoption(lost)

    def _clean_up(self) -> None:
        """Undo every piece of set-up that happened; safe to call after a partial set-up."""
        if self.fifo_fd >= 0:
            from mi_fifo import remove_fifo

            fd, self.fifo_fd = self.fifo_fd, -1
            _quietly(lambda: remove_fifo(self.cfg.fifo, fd), "removing the FIFO")
        if self.sock is not None:
            self.sock.close()
        if self.datagram is not None:
            from mi_server.datagram.sockets import remove_socket

            bound = self.datagram
            _quietly(lambda: remove_socket(bound), "removing the datagram socket")
            bound.close()
        if self.engine is not None:
            engine = self.engine
            _quietly(lambda: backend.release(engine), "releasing the queue engine")
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if self.pid_file is not None:
            _quietly(self.pid_file.release, "removing the pid file")
            self.pid_file = None


def _consumer_target(engine: Engine | None, consumer: Any, handler: Handler, name: str
                     ) -> Callable[[], None]:
    at_least_once = None
    if consumer.delivery == "at-least-once":
        at_least_once = AtLeastOnce(consumer.lease, consumer.retry, consumer.max_deliveries)

    def run() -> None:
        run_consumer(engine, consumer.queue, handler, consumer.interval, consumer.batch, name,
                     at_least_once)

    return run


def _bind(http_cfg: Any) -> Any:
    from mi_server.http import bind

    return bind(http_cfg)


def _share_with_children() -> None:
    """Import what the children run before forking them, then freeze the heap.

    (The transports were imported by _bind and _claim_fifo already; the MI core and its
    commands are otherwise imported by each child.)  Imported once here, the modules' code
    and objects sit in pages every child shares
    copy-on-write, instead of each child importing its own copy; gc.freeze() keeps the
    children's garbage collections from writing into those objects (and so copying the
    pages).  A restarted child also starts without imports.  Measured, PSS of the whole
    tree: `benchmarks/mi_http.py --quick --servers ours` 57.4 -> 38.6 MiB, the full run
    70.7 -> 48.8 MiB; a small idle configuration 39.7 -> 36.8 MB."""
    import gc

    from mi_server.mi.commands import REGISTRY  # noqa: F401  (the MI core and every command)

    gc.collect()
    gc.freeze()


def _bind_datagram(dgram_cfg: Any) -> Any:
    import mi_server.datagram.server  # noqa: F401  (imported once, shared with the child)
    from mi_server.datagram.sockets import bind_socket

    return bind_socket(dgram_cfg.socket, dgram_cfg.mode, dgram_cfg.user, dgram_cfg.group)


def _claim_fifo(fifo_cfg: Any) -> int:
    from mi_fifo import claim_fifo

    return claim_fifo(fifo_cfg)


def _attempt(action: Callable[[], Any], what: str) -> Any:
    """Run one set-up step; any failure becomes a StartupError naming the step."""
    try:
        return action()
    except StartupError:
        raise
    except Exception as exc:
        raise StartupError(_one_line(exc, what)) from None


def _one_line(exc: BaseException, what: str) -> str:
    """The user's line for a failed step. The parts' own errors (BindError, FifoError...)
    already say what failed, so they stand alone; a bare OSError gets `what` in front."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if type(exc).__module__ != "builtins":
        return text
    return f"{what}: {text}"


def _quietly(action: Callable[[], Any], what: str) -> None:
    try:
        action()
    except Exception as exc:  # clean-up goes on with the next step regardless
        log.warning("%s: %s", what, exc)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
