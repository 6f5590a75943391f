"""Load/save of dbmode queues against real SQLite files and the real MariaDB server."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from mi_server.storage import (
    InvalidTableName,
    StorageError,
    open_storage,
    save_with_fallback,
)
from tests.storage.conftest import Backend

HOSTILE_ITEMS = [
    ("plain", "value"),
    ("quote'", 'double"quote'),
    ("back\\slash", "\\'; DROP TABLE x; --"),
    ("%s%d%%", "100% %(name)s {0}"),
    ("ctl\x01\x1f\x7f", "tab\tcr\rlf\n"),
    ("é€😀", "日本語 ünïcödé 😀"),
    ("", ""),
    ("k" * 64, "v" * 4096),
    ("same", "1"),
    ("same", "2"),
    ("x" * 200, "é" * 5000),  # longer than the documented varchar sizes: ours keeps them
]


def test_create_table_says_whether_it_was_missing(backend: Backend) -> None:
    table = backend.table()
    assert backend.storage.table_exists(table) is False
    assert backend.storage.create_table(table) is True
    assert backend.storage.create_table(table) is False
    assert backend.storage.table_exists(table) is True
    assert backend.rows(table) == []


def test_save_then_load_round_trips_hostile_contents_in_order(backend: Backend) -> None:
    table = backend.table()
    backend.storage.create_table(table)
    backend.storage.save(table, HOSTILE_ITEMS)
    assert backend.rows(table) == HOSTILE_ITEMS
    loaded: list[tuple[str, str]] = []
    assert backend.storage.load(table, lambda k, v: loaded.append((k, v))) == len(HOSTILE_ITEMS)
    assert loaded == HOSTILE_ITEMS


def test_load_follows_id_order_across_saves_and_empties_the_table(backend: Backend) -> None:
    table = backend.table()
    backend.storage.create_table(table)
    backend.storage.save(table, [("a", "1"), ("b", "2")])
    backend.storage.save(table, [("c", "3")])
    backend.storage.save(table, [])
    loaded: list[tuple[str, str]] = []
    backend.storage.load(table, lambda k, v: loaded.append((k, v)))
    assert loaded == [("a", "1"), ("b", "2"), ("c", "3")]
    assert backend.rows(table) == []
    assert backend.storage.load(table, lambda k, v: loaded.append((k, v))) == 0


def test_load_goes_through_the_add_path(backend: Backend) -> None:
    """addmode 2 + size 2 emulated by the callback: storage must call it once per row."""
    table = backend.table()
    backend.storage.create_table(table)
    backend.storage.save(table, [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    queue: list[tuple[str, str]] = []

    def add(key: str, val: str) -> None:
        queue[:] = [item for item in queue if item[0] != key] + [(key, val)]
        del queue[:-2]

    assert backend.storage.load(table, add) == 4
    assert queue == [("a", "3"), ("c", "4")]


def test_load_into_the_real_engine_applies_addmode_and_size(backend: Backend) -> None:
    import uuid

    from mi_server.engine import Arena, QueueSpec

    table = backend.table()
    backend.storage.create_table(table)
    backend.storage.save(table, [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    arena = Arena.create(f"mqtest-{uuid.uuid4().hex[:8]}", 1 << 20,
                                [QueueSpec(table, size=2, addmode=2, dbmode=1)])
    try:
        backend.storage.load(table, lambda k, v: arena.add(table, k, v))
        assert arena.snapshot(table) == [("a", "3"), ("c", "4")]
    finally:
        arena.close()
        arena.unlink()


def test_failing_add_leaves_the_table_unchanged(backend: Backend) -> None:
    table = backend.table()
    backend.storage.create_table(table)
    items = [("a", "1"), ("b", "2"), ("c", "3")]
    backend.storage.save(table, items)
    seen = []

    def add(key: str, val: str) -> None:
        seen.append(key)
        if key == "b":
            raise MemoryError("arena full")

    with pytest.raises(MemoryError):
        backend.storage.load(table, add)
    assert seen == ["a", "b"]
    assert backend.rows(table) == items


def test_null_row_is_an_error_naming_table_and_row(backend: Backend) -> None:
    table = backend.table()
    # A hand-made table that allows NULLs (ours does not).
    auto = "INTEGER PRIMARY KEY AUTOINCREMENT" if backend.kind == "sqlite" \
        else "INT AUTO_INCREMENT PRIMARY KEY"
    backend.raw(f"CREATE TABLE {backend.q(table)} (id {auto}, "
                f"{backend.q('key')} VARCHAR(64) NULL, {backend.q('val')} VARCHAR(4096) NULL)")
    backend.raw(f"INSERT INTO {backend.q(table)} (id, {backend.q('key')}, {backend.q('val')}) "
                "VALUES (?, ?, ?), (?, ?, ?)", (1, "a", "1", 7, "b", None))
    with pytest.raises(StorageError, match=rf"table '{table}', row id 7: val is NULL"):
        backend.storage.load(table, lambda k, v: None)
    assert len(backend.rows(table)) == 2


def test_documented_schema_table_works_and_never_truncates(backend: Backend) -> None:
    table = backend.table()
    auto = "INTEGER PRIMARY KEY AUTOINCREMENT" if backend.kind == "sqlite" \
        else "INT AUTO_INCREMENT PRIMARY KEY"
    backend.raw(f"CREATE TABLE {backend.q(table)} (id {auto}, "
                f"{backend.q('key')} VARCHAR(64) NOT NULL DEFAULT '', "
                f"{backend.q('val')} VARCHAR(4096) NOT NULL DEFAULT '')")
    backend.storage.save(table, [("k", "v")])
    if backend.kind == "mysql":
        # Strict mode: a too-long key fails the whole save rather than being cut.
        with pytest.raises(StorageError):
            backend.storage.save(table, [("ok", "1"), ("k" * 65, "v")])
    loaded: list[tuple[str, str]] = []
    backend.storage.load(table, lambda k, v: loaded.append((k, v)))
    assert loaded == [("k", "v")]


def test_load_of_a_missing_table_is_a_clear_error(backend: Backend) -> None:
    table = backend.table()
    with pytest.raises(StorageError, match=rf"table '{table}' does not exist"):
        backend.storage.load(table, lambda k, v: None)


@pytest.mark.parametrize("name", [
    "q; DROP TABLE x", "q`x", 'q"x', "q'x", "my queue", "q" * 65, "", "1abc", "$q",
    "a-b", "../etc", "é",
])
def test_hostile_queue_names_are_refused_before_any_sql(backend: Backend, name: str) -> None:
    storage = backend.storage
    for call in (lambda: storage.create_table(name), lambda: storage.save(name, [("k", "v")]),
                 lambda: storage.load(name, lambda k, v: None)):
        with pytest.raises(InvalidTableName):
            call()
    # Nothing reached the database: not even the file of an SQLite database was created.
    if backend.kind == "sqlite":
        assert not Path(backend.url[len("sqlite://"):]).exists()


def test_64_character_name_is_accepted(backend: Backend) -> None:
    table = backend.table()[:2] + "x" * 62
    backend.tables.append(table)
    assert backend.storage.create_table(table) is True


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spare(backend: Backend, table: str) -> Path:
    """The fallback file of `table`: its name is part of the documented contract."""
    return backend.fallback_dir / f"{table}.fallback.jsonl"


def test_unreachable_database_at_save_writes_the_fallback_file_and_load_takes_it_back(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    table = backend.table()
    backend.storage.create_table(table)
    backend.storage.save(table, [("db", "first")])
    dead = open_storage(f"mysql://root@127.0.0.1:{closed_port()}/test", backend.fallback_dir)
    items = [("k1", "v'1"), ("é", "😀\\%"), ("k1", "again")]
    with caplog.at_level(logging.ERROR, logger="mqueue.storage"):
        save_with_fallback(dead, table, items)
    assert any("FAILED" in r.getMessage() and table in r.getMessage() for r in caplog.records)
    spare = _spare(backend, table)
    assert [tuple(json.loads(line).values()) for line in spare.read_text().splitlines()] == items
    save_with_fallback(dead, table, [("late", "x")])  # appends
    loaded: list[tuple[str, str]] = []
    assert backend.storage.load(table, lambda k, v: loaded.append((k, v))) == 5
    assert loaded == [("db", "first"), *items, ("late", "x")]
    assert not spare.exists()
    assert backend.rows(table) == []


def test_a_later_save_takes_the_fallback_file_first(backend: Backend) -> None:
    """A queue that saves but never loads (dbmode 2) must not strand its fallback file:
    the next save that reaches the database appends the file's (older) items first."""
    table = backend.table()
    backend.storage.create_table(table)
    dead = open_storage(f"mysql://root@127.0.0.1:{closed_port()}/test", backend.fallback_dir)
    save_with_fallback(dead, table, [("old", "1"), ("old", "2")])
    spare = _spare(backend, table)
    assert spare.exists()
    save_with_fallback(backend.storage, table, [("new", "3")])
    assert backend.rows(table) == [("old", "1"), ("old", "2"), ("new", "3")]
    assert not spare.exists()


def test_fallback_file_stays_when_load_fails(backend: Backend) -> None:
    table = backend.table()
    backend.storage.create_table(table)
    dead = open_storage(f"mysql://root@127.0.0.1:{closed_port()}/test", backend.fallback_dir)
    save_with_fallback(dead, table, [("a", "1")])

    def add(key: str, val: str) -> None:
        raise MemoryError("full")

    with pytest.raises(MemoryError):
        backend.storage.load(table, add)
    assert _spare(backend, table).exists()


def _table_with_fallback_file(backend: Backend, text: str) -> tuple[str, Path]:
    """A new table and its fallback file holding `text`."""
    table = backend.table()
    backend.storage.create_table(table)
    backend.fallback_dir.mkdir()
    spare = _spare(backend, table)
    spare.write_text(text)
    return table, spare


def test_corrupt_fallback_file_is_an_error_naming_file_and_line(backend: Backend) -> None:
    table, spare = _table_with_fallback_file(backend, '{"key": "a", "value": "1"}\nnot json\n')
    with pytest.raises(StorageError, match=r"line 2"):
        backend.storage.load(table, lambda k, v: None)
    assert spare.exists()


def test_a_corrupt_fallback_file_does_not_stop_the_save(backend: Backend) -> None:
    """Every later save would fail (and append to that same file) otherwise."""
    table, spare = _table_with_fallback_file(backend, "not json\n")
    save_with_fallback(backend.storage, table, [("a", "1")])
    assert backend.rows(table) == [("a", "1")]
    assert spare.read_text() == "not json\n"  # left as it was, for a human


def test_save_with_fallback_saves_to_the_database_when_it_works(backend: Backend) -> None:
    table = backend.table()
    backend.storage.create_table(table)
    save_with_fallback(backend.storage, table, [("a", "1")])
    assert backend.rows(table) == [("a", "1")]
    assert not _spare(backend, table).exists()


def test_lone_surrogates_reach_the_database_escaped_and_come_back_exactly(
        backend: Backend) -> None:
    """utf8mb4 (and SQLite's UTF-8) cannot hold a lone surrogate: such a text is stored
    escaped, as is a text that happens to start like an escaped one; all else as it is."""
    from mi_server.storage.textcodec import ESCAPED

    table = backend.table()
    backend.storage.create_table(table)
    items = [("ok", "1"), ("\ud800", "lone \udfff"), (ESCAPED + "x", "looks \u00e9scaped"),
             ("nul\x00inside", "\U0001F600")]
    assert save_with_fallback(backend.storage, table, items) is True
    assert not _spare(backend, table).exists()
    stored = backend.rows(table)
    assert stored[0] == ("ok", "1") and stored[3] == ("nul\x00inside", "\U0001F600")
    assert stored[1] == (ESCAPED + '"\\ud800"', ESCAPED + '"lone \\udfff"')
    assert stored[2][0].startswith(ESCAPED + '"')
    loaded: list[tuple[str, str]] = []
    backend.storage.load(table, lambda k, v: loaded.append((k, v)))
    assert loaded == items


def test_keys_and_values_beyond_text_s_64_kib_are_saved(backend: Backend) -> None:
    """A key over TEXT's 64 KiB (MySQL's old `key TEXT`) and a multi-megabyte value of
    4-byte characters: the engine accepts them, so the table must hold them."""
    table = backend.table()
    backend.storage.create_table(table)
    items = [("k" * 70_000, "\U0001F600" * 300_000), ("small", "v")]
    assert save_with_fallback(backend.storage, table, items) is True
    loaded: list[tuple[str, str]] = []
    backend.storage.load(table, lambda k, v: loaded.append((k, v)))
    assert loaded == items


def test_an_older_version_s_table_keeps_working_and_can_be_widened(backend: Backend) -> None:
    """MySQL tables made by the previous version (key TEXT, val MEDIUMTEXT): saves that
    fit work as before; a key too long fails the save whole (strict mode: the fallback
    file takes it, nothing truncated); widen_table (--create-tables) makes them LONGTEXT."""
    if backend.kind != "mysql":
        pytest.skip("SQLite's TEXT has no length")
    table = backend.table()
    backend.raw(f"CREATE TABLE `{table}` (`id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT "
                "PRIMARY KEY, `key` TEXT NOT NULL, `val` MEDIUMTEXT NOT NULL) ENGINE=InnoDB "
                "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
    backend.storage.save(table, [("k", "v")])
    with pytest.raises(StorageError):
        backend.storage.save(table, [("ok", "1"), ("k" * 70_000, "v")])
    assert backend.storage.widen_table(table) is True
    assert backend.storage.widen_table(table) is False  # nothing left to widen
    kinds = backend.raw("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.columns "
                        "WHERE table_schema = DATABASE() AND table_name = ? "
                        "ORDER BY COLUMN_NAME", (table,))
    assert [(n, str(k).lower()) for n, k in kinds] == [
        ("id", "bigint"), ("key", "longtext"), ("val", "longtext")]
    backend.storage.save(table, [("k" * 70_000, "v")])
    assert backend.rows(table) == [("k", "v"), ("k" * 70_000, "v")]

