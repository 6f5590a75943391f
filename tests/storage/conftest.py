"""Both real databases for every storage test: SQLite files and the MariaDB server.

A MySQL connection failure FAILS the tests (no skip): run scripts/ensure_mysql.sh and export
MQ_TEST_MYSQL_URL when nothing answers at 127.0.0.1:3306.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from mi_server.storage import Storage, open_storage
from mi_server.storage.url import MysqlUrl, parse_db_url


@dataclass
class Backend:
    """A Storage plus a raw connection to look behind its back, and table cleanup."""

    kind: str
    url: str
    storage: Storage
    fallback_dir: Path
    tables: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A fresh queue/table name for this test (tests run in parallel)."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.tables.append(name)
        return name

    def raw(self, sql: str, args: tuple = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(parse_db_url(self.url).path) as db:  # type: ignore[union-attr]
                rows = db.execute(sql, args).fetchall()
            return rows
        u = parse_db_url(self.url)
        assert isinstance(u, MysqlUrl)
        db = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password,
                             database=u.database, unix_socket=u.unix_socket,
                             charset="utf8mb4", autocommit=True)
        try:
            with db.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), args)
                return list(cur.fetchall())
        finally:
            db.close()

    def q(self, name: str) -> str:
        return f'"{name}"' if self.kind == "sqlite" else f"`{name}`"

    def rows(self, table: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.raw(
            f"SELECT {self.q('key')}, {self.q('val')} FROM {self.q(table)} ORDER BY id")]


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, mysql_url: str) -> Iterator[Backend]:
    url = f"sqlite://{tmp_path}/store.db" if request.param == "sqlite" else mysql_url
    fallback_dir = tmp_path / "fallback"
    b = Backend(request.param, url, open_storage(url, fallback_dir), fallback_dir)
    yield b
    for table in b.tables:
        b.raw(f"DROP TABLE IF EXISTS {b.q(table)}")
    b.storage.close()
