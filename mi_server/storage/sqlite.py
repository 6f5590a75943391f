"""SQLite storage (the embedded default): one file, one table per dbmode queue."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mi_server.storage.base import Storage
from mi_server.storage.errors import StorageError


class SqliteStorage(Storage):
    db_errors = (sqlite3.Error,)
    creates_tables_at_start = True

    def __init__(self, path: Path, fallback_dir: Path) -> None:
        super().__init__(fallback_dir)
        self.path = Path(path)

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _connect(self) -> sqlite3.Connection:
        # A missing directory is a mistake in db_url (a typo would otherwise create a
        # fresh, empty database somewhere unexpected): say so instead of creating it.
        if not self.path.parent.is_dir():
            raise StorageError(f"sqlite {self.path}: the directory {self.path.parent} does "
                               "not exist (it is not created: create it, or fix db_url)")
        # isolation_level=None: we issue BEGIN ourselves (IMMEDIATE takes the write lock
        # before reading, so a load cannot interleave with another writer).
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def _begin(self, cur: sqlite3.Cursor) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def _create_sql(self, table: str) -> str:
        q = self._quote
        return (f"CREATE TABLE {q(table)} ("
                f"{q('id')} INTEGER PRIMARY KEY AUTOINCREMENT, "
                f"{q('key')} TEXT NOT NULL DEFAULT '', "
                f"{q('val')} TEXT NOT NULL DEFAULT '')")

    def _exists_sql(self) -> str:
        return "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
