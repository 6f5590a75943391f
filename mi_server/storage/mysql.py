"""MySQL/MariaDB storage through PyMySQL.

Our tables use LONGTEXT for `key` and `val` (utf8mb4, binary collation) instead of the
documented sample's varchar(64)/varchar(4096): the engine accepts keys and values of any
length (up to its arena), and a save must not lose them; what utf8mb4 cannot hold (a lone
surrogate) is stored escaped (textcodec.py).  One row must still fit in the server's
max_allowed_packet.  Tables made by hand with the documented schema, or by older versions
(key TEXT, val MEDIUMTEXT), work too: the session runs in strict mode, so an item too long
for them fails the save (which then goes to the fallback file) instead of being silently
truncated; `--create-tables` widens the older versions' TEXT/MEDIUMTEXT columns.
"""

from __future__ import annotations

from pathlib import Path

import pymysql

from mi_server.storage.base import Storage
from mi_server.storage.url import MysqlUrl

CONNECT_TIMEOUT = 5  # seconds; a dead server must not hang start-up or shutdown for long
# seconds one read or write of a connection may wait (the greeting included): a server
# that accepts connections but never answers would otherwise hang the load at start or
# the save at stop forever (PyMySQL waits without limit by default); MySQL's own
# net_read_timeout is 30 s
IO_TIMEOUT = 30.0


class MysqlStorage(Storage):
    placeholder = "%s"
    db_errors = (pymysql.err.Error,)
    select_suffix = " FOR UPDATE"

    def __init__(self, url: MysqlUrl, fallback_dir: Path, io_timeout: float = IO_TIMEOUT) -> None:
        super().__init__(fallback_dir)
        self.url = url
        self.io_timeout = io_timeout

    def describe(self) -> str:
        where = self.url.unix_socket or f"{self.url.host}:{self.url.port}"
        return f"mysql {self.url.user}@{where}/{self.url.database}"

    def _connect(self) -> pymysql.connections.Connection:
        u = self.url
        return pymysql.connect(
            host=u.host, port=u.port, user=u.user, password=u.password, database=u.database,
            unix_socket=u.unix_socket, charset="utf8mb4", autocommit=False,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=self.io_timeout, write_timeout=self.io_timeout,
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
                f"{q('key')} LONGTEXT NOT NULL, "
                f"{q('val')} LONGTEXT NOT NULL"
                ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")

    def _exists_sql(self) -> str:
        return ("SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s")

    def widen_table(self, queue: str) -> bool:
        """ALTER the TEXT/MEDIUMTEXT `key`/`val` of an older version's table to LONGTEXT (a
        VARCHAR column, the documented OpenSIPS schema, is the operator's choice: kept)."""
        from mi_server.storage.names import check_table_name

        table = check_table_name(queue)
        q = self._quote
        with self._transaction(table, "widen table") as cur:
            cur.execute("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.columns "
                        "WHERE table_schema = DATABASE() AND table_name = %s "
                        "AND COLUMN_NAME IN ('key', 'val')", (table,))
            narrow = [name for name, kind in cur.fetchall()
                      if str(kind).lower() in ("tinytext", "text", "mediumtext")]
            if not narrow:
                return False
            changes = ", ".join(f"MODIFY {q(name)} LONGTEXT NOT NULL" for name in sorted(narrow))
            cur.execute(f"ALTER TABLE {q(table)} {changes}")
            return True
