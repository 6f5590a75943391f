"""Load and save of dbmode queues, written once over a small per-dialect interface.

Each operation opens its own connection and closes it: the server loads at start and saves
at stop, possibly days apart, and a connection kept that long would have timed out.
Queue names reach SQL only through `check_table_name` and the dialect's identifier quoting;
keys and values are always bound parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mi_server.storage.errors import StorageError
from mi_server.storage.fallback import fallback_path, read_items, remove_file
from mi_server.storage.names import check_table_name
from mi_server.storage.textcodec import from_db, to_db

log = logging.getLogger(__name__)


class Loaded(int):
    """What a load passed to `add`: an int (the total), which also tells the table's rows
    from the fallback file's items."""

    rows: int
    taken_back: int

    def __new__(cls, rows: int, taken_back: int) -> Loaded:
        total = super().__new__(cls, rows + taken_back)
        total.rows, total.taken_back = rows, taken_back
        return total


class Storage:
    """One database; subclasses say how to connect and how their SQL is spelled."""

    placeholder = "?"
    # An embedded database belongs to this server alone, so the server creates the tables
    # of its dbmode queues at start; a shared one (MySQL) is provisioned by its operator,
    # as OpenSIPS expects (`mi-server -c FILE --create-tables` does it on request).
    creates_tables_at_start = False
    db_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, fallback_dir: Path) -> None:
        self.fallback_dir = Path(fallback_dir)

    # -- dialect hooks ----------------------------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    def _quote(self, name: str) -> str:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    def _create_sql(self, table: str) -> str:
        raise NotImplementedError

    def _exists_sql(self) -> str:
        raise NotImplementedError

    select_suffix = ""  # e.g. MySQL's FOR UPDATE

    def describe(self) -> str:
        raise NotImplementedError

    # -- the Storage API (ARCHITECTURE.md §6) -----------------------------------------

    def create_table(self, queue: str) -> bool:
        """Create the queue's table; True when it was missing."""
        table = check_table_name(queue)
        with self._transaction(table, "create table") as cur:
            if self._exists(cur, table):
                return False
            cur.execute(self._create_sql(table))
            return True

    def widen_table(self, queue: str) -> bool:
        """Give an existing table of an older version columns that hold every key and value
        the engine accepts; True when it changed something (the dialects that need it)."""
        return False

    def table_exists(self, queue: str) -> bool:
        table = check_table_name(queue)
        with self._transaction(table, "look up table") as cur:
            return self._exists(cur, table)

    def load(self, queue: str, add: Callable[[str, str], None]) -> Loaded:
        """Feed the table's rows (by id), then the fallback file's items, through `add`;
        delete what was loaded. One transaction: on any failure the table is unchanged
        and the fallback file stays. Returns the number of items passed to `add`."""
        table = check_table_name(queue)
        spare = fallback_path(self.fallback_dir, queue)
        q = self._quote
        with self._transaction(table, "load") as cur:
            if not self._exists(cur, table):
                raise StorageError(f"{self.describe()}: table {table!r} does not exist "
                                   "(create it: mi-server -c FILE --create-tables)")
            cur.execute(f"SELECT {q('id')}, {q('key')}, {q('val')} FROM {q(table)} "
                        f"ORDER BY {q('id')}{self.select_suffix}")
            rows = cur.fetchall()
            for row_id, key, val in rows:
                if key is None or val is None:
                    column = "key" if key is None else "val"
                    raise StorageError(f"{self.describe()}: table {table!r}, row id {row_id}: "
                                       f"{column} is NULL")
                add(from_db(_text(key)), from_db(_text(val)))
            if rows:
                cur.execute(f"DELETE FROM {q(table)} WHERE {q('id')} <= {self.placeholder}",
                            (rows[-1][0],))
            extra = read_items(spare)
            for key, val in extra:
                add(key, val)
        if extra:
            # Only once the rows' deletion is committed: a failure above keeps the file.
            remove_file(spare)
            log.info("queue %r: %d item(s) taken back from the fallback file %s", queue,
                     len(extra), spare)
        return Loaded(len(rows), len(extra))

    def save(self, queue: str, items: list[tuple[str, str]]) -> None:
        """Append the fallback file's items (an earlier failed save, so older), then
        `items` (oldest first), in one transaction; the file goes once that is committed.
        (A queue that saves without loading would otherwise strand the file forever.)"""
        table = check_table_name(queue)
        spare = fallback_path(self.fallback_dir, queue)
        q = self._quote
        try:
            earlier = read_items(spare)
        except StorageError as exc:
            # An unreadable file must not stop this save too (and every later one): the
            # queue is saved, the file is left for a human (load names its bad line).
            log.error("%s; saving queue %r without it", exc, queue)
            earlier = []
        with self._transaction(table, "save") as cur:
            if not self._exists(cur, table):
                raise StorageError(f"{self.describe()}: table {table!r} does not exist")
            if earlier or items:
                cur.executemany(
                    f"INSERT INTO {q(table)} ({q('key')}, {q('val')}) "
                    f"VALUES ({self.placeholder}, {self.placeholder})",
                    [(to_db(k), to_db(v)) for k, v in (*earlier, *items)])
        if earlier:
            remove_file(spare)
            log.info("queue %r: %d item(s) taken back from the fallback file %s (saved to "
                     "the database before this stop's items)", queue, len(earlier), spare)

    def close(self) -> None:
        """Nothing stays open between operations; kept for the contract."""

    # -- helpers ----------------------------------------------------------------------

    def _exists(self, cur: Any, table: str) -> bool:
        cur.execute(self._exists_sql(), (table,))
        return cur.fetchone() is not None

    @contextmanager
    def _transaction(self, table: str, what: str) -> Iterator[Any]:
        """A cursor inside BEGIN..COMMIT; rollback on any exception. Database errors
        become StorageError naming the table; others (the add callback's) pass as they are."""
        try:
            conn = self._connect()
        except (*self.db_errors, OSError) as exc:
            raise StorageError(f"{self.describe()}: {what} {table!r}: cannot connect: "
                               f"{exc}") from exc
        try:
            cur = conn.cursor()
            self._begin(cur)
            try:
                yield cur
                conn.commit()
            except BaseException:
                _quietly(conn.rollback)
                raise
        except (*self.db_errors, UnicodeError) as exc:
            raise StorageError(f"{self.describe()}: {what} {table!r}: {exc}") from exc
        finally:
            _quietly(conn.close)


def _text(value: str | bytes) -> str:
    # A table made with binary columns hands back bytes; ours hands back str.
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - cleanup after a failure must not hide the failure
        pass
