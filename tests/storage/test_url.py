"""db_url parsing: the mysql:// forms (TCP, unix socket, URL-encoded credentials) and sqlite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mi_server.storage import open_storage
from mi_server.storage.url import BadDbUrl, MysqlUrl, SqliteUrl, parse_db_url, redact


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://root@127.0.0.1:3306/test", MysqlUrl("127.0.0.1", 3306, "root", "", "test")),
    ("mysql://u:p@db.example/opensips", MysqlUrl("db.example", 3306, "u", "p", "opensips")),
    ("mysql://us%40er:p%3Ass%2F%25@h:1/d", MysqlUrl("h", 1, "us@er", "p:ss/%", "d")),
    ("mysql://u@localhost/db?unix_socket=/run/mysqld/mysqld.sock",
     MysqlUrl("localhost", 3306, "u", "", "db", "/run/mysqld/mysqld.sock")),
    ("sqlite:///var/tmp/q.db", SqliteUrl(Path("/var/tmp/q.db"))),
    ("sqlite:////var/tmp/q.db", SqliteUrl(Path("/var/tmp/q.db"))),
    ("sqlite://rel/q.db", SqliteUrl(Path("rel/q.db"))),
])
def test_db_url_forms(url: str, expected: object) -> None:
    assert parse_db_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("postgres://h/d", "unsupported scheme"),
    ("mysql://u@h", "no database name"),
    ("mysql://u@h/a/b", "no database name"),
    ("mysql://u@h:x/d", "bad port"),
    ("mysql://u@h/d?ssl=1", "unknown option(s) ssl"),
    ("mysql:///d", "no host"),
    ("sqlite://", "no file name"),
    ("sqlite:///", "no file name"),
    ("", "non-empty"),
])
def test_bad_db_urls(url: str, message: str) -> None:
    with pytest.raises(BadDbUrl, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_db_url(url)


def test_password_is_kept_out_of_messages() -> None:
    assert redact("mysql://u:secret@h/d") == "mysql://u:***@h/d"
    with pytest.raises(BadDbUrl) as info:
        parse_db_url("mysql://u:secret@h:x/d")
    assert "secret" not in str(info.value)


SOCKET = "/run/mysqld/mysqld.sock"


def test_unix_socket_form_reaches_the_real_server(mysql_url: str) -> None:
    # The local server's socket is the one place this form can be exercised for real.
    if not os.path.exists(SOCKET):
        pytest.skip(f"no MariaDB socket at {SOCKET}")
    u = parse_db_url(mysql_url)
    assert isinstance(u, MysqlUrl)
    storage = open_storage(f"mysql://{u.user}@localhost/{u.database}?unix_socket={SOCKET}")
    assert storage.table_exists("t_surely_absent_table") is False
