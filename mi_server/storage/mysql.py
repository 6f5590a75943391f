"""MySQL/MariaDB storage through PyMySQL.

Our tables use `key TEXT` and `val MEDIUMTEXT` (utf8mb4, binary collation) instead of the
documented sample's varchar(64)/varchar(4096): the engine accepts keys and values of any
length, and a save must not lose them. Tables made by hand with the documented schema work
too: the session runs in strict mode, so a too-long item fails the save (which then goes to
the fallback file) instead of being silently truncated.
"""

from __future__ import annotations

from pathlib import Path

import pymysql

from mi_server.storage.base import Storage
from mi_server.storage.url import MysqlUrl

CONNECT_TIMEOUT = 5  # seconds; a dead server must not hang start-up or shutdown for long


class MysqlStorage(Storage):
    placeholder = "%s"
    db_errors = (pymysql.err.Error,)
    select_suffix = " FOR UPDATE"

    def __init__(self, url: MysqlUrl, fallback_dir: Path) -> None:
        super().__init__(fallback_dir)
        self.url = url

    def describe(self) -> str:
        where = self.url.unix_socket or f"{self.url.host}:{self.url.port}"
        return f"mysql {self.url.user}@{where}/{self.url.database}"

    def _connect(self) -> pymysql.connections.Connection:
        u = self.url
        return pymysql.connect(
            host=u.host, port=u.port, user=u.user, password=u.password, database=u.database,
            unix_socket=u.unix_socket, charset="utf8mb4", autocommit=False,
            connect_timeout=CONNECT_TIMEOUT,
            # Our own sql_mode: strict (errors, not truncation) and no ANSI_QUOTES surprises.
            init_command="SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        )

    def _begin(self, cur: pymysql.cursors.Cursor) -> None:
        cur.execute("START TRANSACTION")

    def _quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def _create_sql(self, table: str) -> str:
        q = self._quote
        return (f"CREATE TABLE IF NOT EXISTS {q(table)} ("
                f"{q('id')} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, "
                f"{q('key')} TEXT NOT NULL, "
                f"{q('val')} MEDIUMTEXT NOT NULL"
                ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")

    def _exists_sql(self) -> str:
        return ("SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s")
