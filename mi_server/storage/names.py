"""Which queue names may become SQL table names (checked before any SQL is built)."""

from __future__ import annotations

import re

# A conservative identifier: valid unquoted in MySQL and SQLite, at most 64 characters
# (MySQL's limit). We still quote it, so reserved words such as `order` are fine.
TABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,63}\Z")


class InvalidTableName(ValueError):
    """A queue name that cannot be used as a table name."""


def check_table_name(name: str) -> str:
    """Return `name` when it is a safe table name, else raise InvalidTableName."""
    if not isinstance(name, str) or not TABLE_NAME_RE.match(name):
        raise InvalidTableName(
            f"queue name {name!r} cannot be a table name: use 1-64 characters of "
            "A-Z a-z 0-9 _ $, not starting with a digit or $"
        )
    return name
