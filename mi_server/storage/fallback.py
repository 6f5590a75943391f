"""The local fallback file: queue items that could not be saved to the database.

`<state dir>/<queue>.fallback.jsonl`, one JSON object per line: {"key": ..., "value": ...}.
JSON escapes (ensure_ascii) keep any str, lone surrogates included, on one line.

The state directory must be this server's alone: owned by its uid and writable by nobody
else (UnsafeStateDir otherwise), so that no other user can plant a file or a symbolic link
in it; every file in it is opened relative to a descriptor of the directory with
O_NOFOLLOW and checked with fstat (a regular file of ours with one link).

Appends are all or nothing: the new lines are written after the file's last complete line
and fsync'ed, and any failure (disk full) truncates the file back to where it was.  A cut
last line that a crash in the middle of a write left anyway is dropped before the next
append and skipped, with a warning, by a read; the lines before it are kept.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from mi_server.storage.errors import StorageError
from mi_server.storage.names import check_table_name

log = logging.getLogger("mqueue.storage")


class UnsafeStateDir(StorageError):
    """The state directory may be written by another user; the message is one line."""


def fallback_path(fallback_dir: Path, queue: str) -> Path:
    # The name check also keeps '/' and '..' out of the file name.
    return Path(fallback_dir) / f"{check_table_name(queue)}.fallback.jsonl"


def orphan_path(fallback_dir: Path, queue: str) -> Path:
    """The fallback file for items of `queue` found in an adopted arena: the queue's own
    fallback file (the next load or save of that queue takes them back), or, for a name
    that cannot be a table's, one named by the name's UTF-8 bytes in hex."""
    try:
        return fallback_path(fallback_dir, queue)
    except ValueError:
        return Path(fallback_dir) / f"queue-{queue.encode('utf-8', 'surrogatepass').hex()}" \
                                    ".fallback.jsonl"


def state_dir_problem(directory: Path) -> str | None:
    """Why `directory` is not a safe state directory, or None (a missing one is safe: it
    is created with mode 0700 when first needed)."""
    try:
        os.close(open_state_dir(directory, create=False))
    except FileNotFoundError:
        return None
    except StorageError as exc:
        return str(exc)
    return None


def open_state_dir(directory: Path, create: bool = True) -> int:
    """A descriptor (O_DIRECTORY) of the state directory, created with mode 0700 when
    missing and `create`; UnsafeStateDir when it is a symbolic link, is not owned by this
    process's uid or is writable by its group or others; FileNotFoundError when missing."""
    directory = Path(directory)
    if create:
        try:
            os.makedirs(directory, 0o700, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"state directory {directory}: cannot create it: "
                               f"{exc.strerror or exc}") from exc
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        what = "is a symbolic link" if os.path.islink(directory) else \
            f"cannot be opened: {exc.strerror or exc}"
        raise UnsafeStateDir(f"state directory {directory} is not safe: it {what}") from None
    st = os.fstat(fd)
    uid = os.geteuid()
    problem = None
    if st.st_uid != uid:
        problem = f"it is owned by uid {st.st_uid}, not by this server's uid {uid}"
    elif st.st_mode & 0o022:
        problem = (f"it is writable by its group or others (mode "
                   f"{stat.S_IMODE(st.st_mode):04o}; make it 0700)")
    if problem:
        os.close(fd)
        raise UnsafeStateDir(f"state directory {directory} is not safe: {problem}")
    return fd


def _open_file(path: Path, flags: int, dfd: int) -> int:
    """The file `path.name` in the directory `dfd`, never through a symbolic link, checked:
    a regular file of ours with one link (a hard link to another file has two)."""
    try:
        fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"fallback file {path}: cannot open: {exc.strerror or exc}") \
            from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise StorageError(f"fallback file {path} is not safe: not a regular file of this "
                           f"server's uid with one link (uid {st.st_uid}, "
                           f"{st.st_nlink} link(s)): move it away")
    return fd


def append_items(path: Path, items: list[tuple[str, str]]) -> None:
    """Append `items` (oldest first) and flush them to disk, all or nothing."""
    data = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in items).encode()
    dfd = open_state_dir(path.parent)
    try:
        fd = _open_file(path, os.O_RDWR | os.O_CREAT, dfd)
        try:
            end = _complete_length(fd, path)
            try:
                view = memoryview(data)
                at = end
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, end)  # the file as it was: no cut line left behind
                os.fsync(fd)
                raise
        finally:
            os.close(fd)
        os.fsync(dfd)  # the file's directory entry, when it was just created
    finally:
        os.close(dfd)


def _complete_length(fd: int, path: Path) -> int:
    """The length of the file up to its last complete line; a cut last line (a crash in
    the middle of a write) is dropped, with a warning, so appended lines stay whole."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    tail_start = max(0, size - 1)
    while tail_start > 0:
        chunk_start = max(0, tail_start - 65536)
        chunk = os.pread(fd, tail_start - chunk_start, chunk_start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            tail_start = chunk_start + i + 1
            break
        tail_start = chunk_start
    log.warning("fallback file %s: its last line was cut (%d bytes, a write that did not "
                "finish): dropped before appending", path, size - tail_start)
    os.ftruncate(fd, tail_start)
    return tail_start


def read_items(path: Path) -> list[tuple[str, str]]:
    """The items of a fallback file, oldest first; [] when there is none.  A cut last line
    is skipped with a warning; any other bad line is a StorageError naming it."""
    try:
        dfd = open_state_dir(path.parent, create=False)
    except FileNotFoundError:
        return []
    try:
        fd = _open_file(path, os.O_RDONLY, dfd)
    except FileNotFoundError:
        return []
    finally:
        os.close(dfd)
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        text = raw.decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"fallback file {path}: cannot read: {exc}") from exc
    items = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        item = _item(line)
        if item is None:
            if number == len(lines):  # no newline after it: a write that did not finish
                log.warning("fallback file %s: line %d was cut (a write that did not "
                            "finish): skipped, the %d item(s) before it kept", path, number,
                            len(items))
                break
            raise StorageError(f"fallback file {path}: line {number}: not an item "
                               '{"key": "...", "value": "..."}')
        items.append(item)
    return items


def remove_file(path: Path) -> None:
    """Remove the fallback file once its items are safely elsewhere."""
    try:
        dfd = open_state_dir(path.parent, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(path.name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dfd)


def _item(line: str) -> tuple[str, str] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("key"), str) \
            and isinstance(obj.get("value"), str):
        return obj["key"], obj["value"]
    return None
