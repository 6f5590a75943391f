"""The only SQL in the project: load and save of dbmode queues (MySQL and SQLite).

    storage = open_storage("sqlite:///var/tmp/q.db")        # or mysql://user:pass@host/db
    storage.create_table("myq")                              # True when it was missing
    storage.load("myq", arena_add)                           # at start (dbmode 1 and 3)
    save_with_fallback(storage, "myq", items)                # at stop (dbmode 1 and 2)

A save that fails writes the items to `<fallback_dir>/<queue>.fallback.jsonl`; the next load
of that queue takes them back after the table's rows, the next save that succeeds before its
own items. `fallback_dir` defaults to the SQLite file's directory, or /var/tmp/mqueue-mi for
MySQL.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mi_server.storage.base import Storage
from mi_server.storage.errors import StorageError
from mi_server.storage.fallback import append_items, fallback_path
from mi_server.storage.names import InvalidTableName, check_table_name
from mi_server.storage.url import BadDbUrl, MysqlUrl, SqliteUrl, parse_db_url

__all__ = ["BadDbUrl", "InvalidTableName", "Storage", "StorageError", "check_table_name",
           "open_storage", "save_with_fallback", "DEFAULT_MYSQL_FALLBACK_DIR"]

DEFAULT_MYSQL_FALLBACK_DIR = Path("/var/tmp/mqueue-mi")
log = logging.getLogger("mqueue.storage")


def open_storage(db_url: str, fallback_dir: str | Path | None = None,
                 io_timeout: float | None = None) -> Storage:
    """The Storage for `db_url` (BadDbUrl when malformed). Nothing is connected yet:
    each operation connects, so an unreachable database fails that operation only.
    `io_timeout`: the seconds a MySQL server may take to answer (default
    mysql.IO_TIMEOUT); SQLite is local and has none."""
    parsed = parse_db_url(db_url)
    if isinstance(parsed, SqliteUrl):
        from mi_server.storage.sqlite import SqliteStorage

        path = parsed.path.resolve()
        return SqliteStorage(path, Path(fallback_dir) if fallback_dir else path.parent)
    assert isinstance(parsed, MysqlUrl)
    from mi_server.storage.mysql import IO_TIMEOUT, MysqlStorage

    return MysqlStorage(parsed, Path(fallback_dir) if fallback_dir
                        else DEFAULT_MYSQL_FALLBACK_DIR,
                        IO_TIMEOUT if io_timeout is None else io_timeout)


def save_with_fallback(storage: Storage, queue: str, items: list[tuple[str, str]],
                       fallback_dir: str | Path | None = None) -> bool:
    """Save `items`: True when they went to the database; when it fails, log loudly,
    append them to the queue's fallback file (default: the storage's fallback_dir) so
    nothing is lost, and return False.  Raises when the file cannot take them either."""
    check_table_name(queue)
    try:
        storage.save(queue, items)
        return True
    except Exception as exc:  # noqa: BLE001 - whatever broke, the items must survive
        path = fallback_path(Path(fallback_dir) if fallback_dir else storage.fallback_dir,
                             queue)
        log.error("saving %d item(s) of queue %r to the database FAILED: %s; "
                  "writing them to %s", len(items), queue, exc, path)
    append_items(path, items)
    log.error("queue %r: %d item(s) written to the fallback file %s; the next load or save "
              "of the queue takes them back", queue, len(items), path)
    return False
