"""The pid file: written once the server is set up, removed at exit (only if still ours)."""

from __future__ import annotations

import os
from pathlib import Path


def write_pid_file(path: Path) -> None:
    """Write this process's pid atomically, so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: Path) -> None:
    """Remove the pid file unless another instance has since replaced it with its own pid."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass
