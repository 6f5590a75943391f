"""dbmode at start and stop: load the queues that load, save the queues that save.

The SQL lives in mi_server.storage; this module only decides which queues, in which
order, and where the fallback file goes when the database cannot take a save.

Fallback directory (where `save_with_fallback` writes a queue the database refused, and
where the next load, or the next save that reaches the database, takes it back):
`state_dir` when configured, else the directory of `pid_file` when one is configured (a
place the operator chose for this instance's state), else the storage default: the SQLite
file's directory, or /var/tmp/mqueue-mi for MySQL. Load and save use the same directory,
so a later start with the same configuration finds the file.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from mi_server.engine.contract import Engine
from mi_server.storage import DEFAULT_MYSQL_FALLBACK_DIR, open_storage, save_with_fallback
from mi_server.storage.fallback import open_state_dir
from mi_server.storage.url import SqliteUrl, parse_db_url

log = logging.getLogger(__name__)


def fallback_dir(cfg: Any) -> Path | None:
    """Where the fallback files live (module docstring); None means the storage default."""
    if cfg.state_dir is not None:
        return cfg.state_dir
    if cfg.pid_file is not None:
        return Path(cfg.pid_file).resolve().parent
    return None


def state_dir(cfg: Any) -> Path:
    """The directory of this server's fallback files, whatever the storage: fallback_dir
    when it names one, else the storage default (the SQLite file's directory, or
    /var/tmp/mqueue-mi).  A derived directory that is a shared sticky one (/tmp, /var/tmp:
    anyone may create files there) is not a state directory: its `mqueue-mi`
    subdirectory is used instead."""
    directory = fallback_dir(cfg)
    if directory is None:
        parsed = parse_db_url(cfg.db_url) if cfg.db_url else None
        directory = (parsed.path.resolve().parent if isinstance(parsed, SqliteUrl)
                     else DEFAULT_MYSQL_FALLBACK_DIR)
    if cfg.state_dir is None and _shared_sticky(directory):
        directory = directory / "mqueue-mi"
    return directory


def _shared_sticky(directory: Path) -> bool:
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISVTX and mode & stat.S_IWOTH)


def prepare_state_dir(cfg: Any) -> None:
    """At start, when the server has a database (its fallback files may be needed): make
    the state directory (mode 0700) if it is missing, so that nobody else can make it
    first, and refuse one another user could write into (UnsafeStateDir: one line)."""
    if cfg.db_url is not None:
        os.close(open_state_dir(state_dir(cfg)))


PROBE_TIMEOUT = 5.0  # seconds the status probe waits for the database's answer


def open_for(cfg: Any, io_timeout: float | None = None) -> Any:
    return open_storage(cfg.db_url, state_dir(cfg), io_timeout)


class LoadFailed(Exception):
    """A dbmode queue could not be loaded; the message is one clear line."""


def load_queues(engine: Engine, cfg: Any, loaded: list[str]) -> None:
    """Load every queue that loads at start, in definition order, through engine.add.

    Names are appended to `loaded` as each queue finishes, so that on a failure the caller
    knows which queues already hold rows that were deleted from the database.
    """
    specs = [s for s in cfg.queues if s.loads_at_start]
    if not specs:
        return
    storage = _open(cfg, "load")
    try:
        for spec in specs:
            if storage.creates_tables_at_start:
                _create_table(storage, spec.name)
            def add(key: str, value: str, _q: str = spec.name) -> None:
                engine.add(_q, key, value)

            try:
                n = storage.load(spec.name, add)
            except Exception as exc:
                raise LoadFailed(f"cannot load queue '{spec.name}': {_reason(exc)}") from None
            loaded.append(spec.name)
            log.info("queue '%s': %d item(s) loaded from the database", spec.name,
                     getattr(n, "rows", n))
    finally:
        storage.close()


def save_queues(engine: Engine, cfg: Any, names: list[str] | None = None,
                lost: list[str] | None = None) -> bool:
    """Save the queues that save at stop (or exactly `names`); False when one was lost
    (its name appended to `lost`: its items are still in the engine).

    Each queue goes to the database in one transaction, or to its fallback file when the
    database cannot take it (save_with_fallback). A queue is only reported lost when both
    fail. A queue saved is emptied in the engine at once, so that a crash before the arena
    is gone cannot bring its items back a second time (adopted and loaded).
    """
    if names is None:
        names = [s.name for s in cfg.queues if s.saves_at_stop]
    if not names:
        return True
    # open_storage connects lazily; it fails only for a malformed URL, which the
    # configuration check has already refused.
    storage = open_for(cfg)
    ok = True
    try:
        for name in names:
            items = engine.snapshot(name)
            try:
                if save_with_fallback(storage, name, items):  # logs a fallback itself
                    log.info("queue '%s': %d item(s) saved to the database", name,
                             len(items))
            except Exception as exc:
                ok = False
                if lost is not None:
                    lost.append(name)
                log.error("queue '%s': %d item(s) NOT SAVED: cannot save to the database "
                          "nor to %s: %s", name, len(items), storage.fallback_dir,
                          _reason(exc))
            else:
                engine.fetch_many(name, len(items))  # the saved items: the head, in order
    finally:
        storage.close()
    return ok


def check_save_tables(cfg: Any) -> None:
    """Fail start-up when a queue that saves at stop has no table in a reachable database.

    Found at start, the mistake costs a restart; found at stop, the queue would go to the
    fallback file instead. An unreachable database is only a warning here: the save at
    stop falls back to the file, and the database may well be back by then.
    """
    names = [s.name for s in cfg.queues if s.saves_at_stop and not s.loads_at_start]
    if not names:
        return
    storage = open_for(cfg, PROBE_TIMEOUT)  # MySQL only looks; SQLite (local) creates
    try:
        for name in names:
            if storage.creates_tables_at_start:
                _create_table(storage, name)
                continue
            try:
                exists = storage.table_exists(name)
            except Exception as exc:
                log.warning("queue '%s' saves at stop, but the database is unreachable now: "
                            "%s", name, _reason(exc))
                continue
            if not exists:
                raise LoadFailed(f"queue '{name}' saves at stop but its table does not exist "
                                 f"(create it: mi-server -c FILE --create-tables)")
    finally:
        storage.close()


def probe_save_tables(cfg: Any) -> dict[str, str | None]:
    """For each queue that saves at stop: None when its table answers in the database now,
    else why not (one line). For the status report; never raises."""
    names = [s.name for s in cfg.queues if s.saves_at_stop]
    if not names:
        return {}
    try:
        storage = open_for(cfg, PROBE_TIMEOUT)
    except Exception as exc:
        return dict.fromkeys(names, _reason(exc))
    out: dict[str, str | None] = {}
    try:
        for name in names:
            try:
                out[name] = None if storage.table_exists(name) else "its table does not exist"
            except Exception as exc:
                out[name] = _reason(exc)
    finally:
        try:
            storage.close()
        except Exception:  # a storage that failed to connect may fail to close too
            pass
    return out


def _create_table(storage: Any, name: str) -> None:
    try:
        if storage.create_table(name):
            log.info("queue '%s': table created in %s", name, storage.describe())
    except Exception as exc:
        raise LoadFailed(f"cannot create the table of queue '{name}': {_reason(exc)}") from None


def _open(cfg: Any, why: str) -> Any:
    try:
        return open_for(cfg)
    except Exception as exc:
        raise LoadFailed(f"cannot open the database to {why} queues: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """One line for an exception: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
