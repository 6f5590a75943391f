"""Whether a state directory (fallback files) is safe to write queue data into and to
load queue data from: one check, for `--check` and for the runtime alike.

Another local user who can create or write into that directory can plant files the
server then loads as queue items, or symlinks its saves would follow. So the directory
must be a real directory (not a symlink), owned by the server's uid, and writable by
nobody else. A directory that does not exist yet is created 0700 at the first save; then
its nearest existing parent must not let others swap it: not writable by group/others,
unless sticky (/var/tmp is fine as a parent: nobody else can replace a directory of
ours in it, only create theirs first, which this check then refuses).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def unsafe_state_dir(directory: Path) -> str | None:
    """Why `directory` is not a safe state directory, in words; None when it is."""
    directory = Path(directory)
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return _unsafe_parent(directory)
    except OSError as exc:
        return f"{directory}: cannot be checked: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{directory} is a symlink (a state directory must be a real directory)"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory"
    uid = os.geteuid()
    if st.st_uid != uid:
        return (f"{directory} is owned by uid {st.st_uid}, not by this server's uid {uid}: "
                "another user could plant files the server would load")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "group and others" if st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IWOTH \
            else "its group" if st.st_mode & stat.S_IWGRP else "others"
        return (f"{directory} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): "
                "make it 0700 or 0755")
    return None


def _unsafe_parent(directory: Path) -> str | None:
    parent = directory.parent
    while True:
        try:
            st = os.stat(parent)
            break
        except FileNotFoundError:
            if parent == parent.parent:
                return None
            parent = parent.parent
        except OSError as exc:
            return f"{parent}: cannot be checked: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} cannot be created: {parent} is not a directory"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return (f"{directory} would be created in {parent}, which others may write "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, not sticky): they could replace it")
    return None
