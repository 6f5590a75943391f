"""The local fallback file: queue items that could not be saved to the database.

`<dir>/<queue>.fallback.jsonl`, one JSON object per line: {"key": ..., "value": ...}.
JSON escapes (ensure_ascii) keep any str, lone surrogates included, on one line.
Writes append and fsync, so items survive a crash right after the failed save.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mi_server.storage.errors import StorageError
from mi_server.storage.names import check_table_name


def fallback_path(fallback_dir: Path, queue: str) -> Path:
    # The name check also keeps '/' and '..' out of the file name.
    return Path(fallback_dir) / f"{check_table_name(queue)}.fallback.jsonl"


def append_items(path: Path, items: list[tuple[str, str]]) -> None:
    """Append `items` (oldest first) and flush them to disk."""
    created_dir = not path.parent.exists()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in items)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data.encode("ascii"))
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created_dir:
        _fsync_dir(path.parent)


def read_items(path: Path) -> list[tuple[str, str]]:
    """The items of a fallback file, oldest first; [] when there is none."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"fallback file {path}: cannot read: {exc}") from exc
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not (isinstance(obj, dict) and isinstance(obj.get("key"), str)
                and isinstance(obj.get("value"), str)):
            raise StorageError(f"fallback file {path}: line {number}: not an item "
                               '{"key": "...", "value": "..."}')
        items.append((obj["key"], obj["value"]))
    return items


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def orphan_path(fallback_dir: Path, queue: str) -> Path:
    """The fallback file for items of `queue` found in an adopted arena: the queue's own
    fallback file (the next load or save of that queue takes them back), or, for a name
    that cannot be a table's, one named by the name's UTF-8 bytes in hex."""
    try:
        return fallback_path(fallback_dir, queue)
    except ValueError:
        return Path(fallback_dir) / f"queue-{queue.encode('utf-8', 'surrogatepass').hex()}" \
                                    ".fallback.jsonl"
