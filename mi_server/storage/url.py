"""Parse a `db_url` into connection parameters (no database is touched here).

Forms:
- `mysql://user:password@host:port/db` (port defaults to 3306; user and password are
  URL-decoded, so `p%40ss` is `p@ss`);
- `mysql://user:password@localhost/db?unix_socket=/run/mysqld/mysqld.sock` (a unix socket);
- `sqlite:///abs/file.db` or `sqlite:////abs/file.db` (the same file), and a relative
  `sqlite://rel/file.db`, which config.py resolves against the config file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


class BadDbUrl(ValueError):
    """The db_url cannot be understood."""


@dataclass(frozen=True)
class MysqlUrl:
    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None


@dataclass(frozen=True)
class SqliteUrl:
    path: Path  # absolute once config.py has resolved it


def parse_db_url(url: str) -> MysqlUrl | SqliteUrl:
    """MysqlUrl or SqliteUrl for `url`; BadDbUrl with a one-line reason otherwise."""
    if not isinstance(url, str) or not url:
        raise BadDbUrl("must be a non-empty string")
    if url.startswith("sqlite://"):
        return SqliteUrl(sqlite_path(url))
    if url.startswith("mysql://"):
        return _mysql(url)
    raise BadDbUrl(f"unsupported scheme in {url!r} (expected mysql:// or sqlite://)")


def sqlite_path(url: str) -> Path:
    """The file of a sqlite URL: everything after `sqlite://` (as OpenSIPS db_sqlite)."""
    rest = url[len("sqlite://"):]
    if not rest or rest.strip("/") == "":
        raise BadDbUrl(f"no file name in {url!r}")
    if rest.startswith("//"):
        rest = "/" + rest.lstrip("/")  # sqlite:////abs is the SQLAlchemy spelling of /abs
    return Path(rest)


def _mysql(url: str) -> MysqlUrl:
    parts = urlsplit(url)
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise BadDbUrl(f"bad port in {_redact(url)}") from exc
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise BadDbUrl(f"no database name in {_redact(url)} (mysql://user:pass@host:port/db)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"unix_socket"})
    if unknown:
        raise BadDbUrl(f"unknown option(s) {', '.join(unknown)} in {_redact(url)}")
    socket_path = query.get("unix_socket", [None])[-1]
    if not parts.hostname and not socket_path:
        raise BadDbUrl(f"no host in {_redact(url)}")
    return MysqlUrl(
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=unquote(database),
        unix_socket=socket_path or None,
    )


def _redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


redact = _redact
