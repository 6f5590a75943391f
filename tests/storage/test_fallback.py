"""The fallback file on its own: all-or-nothing appends, a cut last line tolerated, files
opened without following links (docs/persistence.md)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mi_server.storage import StorageError
from mi_server.storage.fallback import append_items, read_items

ITEMS = [(f"k{i}", f"value {i} \u00e9 \ud800") for i in range(413)]


def _lines(items) -> str:
    return "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in items)


def test_a_write_cut_short_by_a_full_disk_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """A real short write: the kernel's file size limit (RLIMIT_FSIZE, as a full disk does)
    stops the append part-way; the file is truncated back and every item stays readable."""
    path = tmp_path / "q.fallback.jsonl"
    append_items(path, ITEMS)
    before = path.read_bytes()
    limit = len(before) + 100  # room for about one more line of the 50 below
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from mi_server.storage.fallback import append_items\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "try:\n"
        f"    append_items(Path({str(path)!r}), [('more', 'x' * 40)] * 50)\n"
        "except OSError as exc:\n"
        "    print('failed:', exc.strerror)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.strip() == "failed: File too large", run.stderr
    assert path.read_bytes() == before
    assert read_items(path) == ITEMS


def test_a_cut_last_line_is_skipped_and_the_rest_kept(tmp_path: Path, caplog) -> None:
    """The issue's case: 413 whole lines and a cut 414th ("line 414: not an item" made
    every start fail)."""
    path = tmp_path / "q.fallback.jsonl"
    path.write_text(_lines(ITEMS) + '{"key": "k413", "val')
    with caplog.at_level(logging.WARNING, "mqueue.storage"):
        assert read_items(path) == ITEMS
    assert f"fallback file {path}: line 414 was cut (a write that did not finish): " \
           "skipped, the 413 item(s) before it kept" in caplog.text


def test_an_append_after_a_cut_line_drops_it_first(tmp_path: Path, caplog) -> None:
    path = tmp_path / "q.fallback.jsonl"
    path.write_text(_lines(ITEMS[:2]) + '{"key": "cut')
    with caplog.at_level(logging.WARNING, "mqueue.storage"):
        append_items(path, [("new", "1")])
    assert "its last line was cut (12 bytes" in caplog.text
    assert path.read_text() == _lines([*ITEMS[:2], ("new", "1")])
    assert read_items(path) == [*ITEMS[:2], ("new", "1")]


def test_a_bad_line_before_the_last_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "q.fallback.jsonl"
    path.write_text(_lines(ITEMS[:1]) + "not json\n" + _lines(ITEMS[1:2]))
    with pytest.raises(StorageError, match="line 2: not an item"):
        read_items(path)


def test_a_symbolic_link_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    path = state / "q.fallback.jsonl"
    path.symlink_to(victim)
    with pytest.raises(StorageError, match="cannot open"):
        append_items(path, [("k", "v")])
    with pytest.raises(StorageError, match="cannot open"):
        read_items(path)
    assert victim.read_text() == "precious\n"


def test_a_hard_link_to_another_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text(_lines([("secret", "1")]))
    state = tmp_path / "state"
    state.mkdir()
    path = state / "q.fallback.jsonl"
    os.link(victim, path)
    with pytest.raises(StorageError, match="2 link"):
        append_items(path, [("k", "v")])
    with pytest.raises(StorageError, match="is not safe"):
        read_items(path)
    assert victim.read_text() == _lines([("secret", "1")])


def test_a_new_state_dir_is_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "q.fallback.jsonl"
    append_items(path, [("k", "v")])
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
