"""The server's arena at start: a fresh one, or the one a server that died left behind,
adopted (docs/persistence.md, "What survives what").

The arena has a stable name (`shm_name`), so after a crash (kill -9, the OOM killer) the
next start with the same configuration finds it.  Its items are copied into a new arena
laid out for the configuration now in force (new queues, sizes and addmodes apply as on a
load from the database); items of queues no longer defined, or that no longer fit, go to
the queue's fallback file.  The new arena is created under a temporary name with its
owner lock held, filled, then renamed over the old one in one step: a crash at any point
leaves the old arena, whole, under the name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mi_server.engine import Arena, ArenaFull
from mi_server.engine.shm.lifecycle import SHM_DIR, process_start_time
from mi_server.engine.shm.survivor import ArenaInUse, ArenaNotOurs, Found, find_survivor
from mi_server.storage.fallback import append_items, orphan_path

log = logging.getLogger(__name__)

__all__ = ["ArenaInUse", "ArenaNotOurs", "start_arena"]

TEMP_INFIX = ".new-"  # <shm_name>.new-<pid>: an arena being prepared by server <pid>


def start_arena(cfg: Any, state_dir: Path) -> tuple[Arena, int]:
    """The arena this server runs on, under cfg.shm_name, its owner lock held; and how many
    items it adopted from a dead server's arena (0: a fresh one).  ArenaInUse when a live
    server has it, ArenaNotOurs when the name is taken by a file we must not touch."""
    name = cfg.shm_name
    _remove_dead_temps(name)
    found = find_survivor(name)
    for note in found.notes:
        log.warning("%s", note)
    temp = f"{name}{TEMP_INFIX}{os.getpid()}"
    Path(SHM_DIR, temp).unlink(missing_ok=True)  # our own pid: a dead namesake's leftover
    try:
        arena = Arena.create(temp, cfg.shm_size, cfg.queues)
    except BaseException:
        _give_back(found)
        raise
    try:
        if not arena.hold_owner_lock():  # nobody else knows the temporary name
            raise ArenaInUse(f"cannot take the owner lock of the new arena {temp}")
        adopted = 0
        if found.arena is not None:
            adopted = _adopt(found, arena, cfg, state_dir)
            arena.rename(name)  # replaces the dead server's arena in one step
            found.arena.close()
        else:
            try:
                arena.rename(name, replace=False)
            except FileExistsError:
                raise ArenaInUse(f"{Path(SHM_DIR, name)} was created by another server "
                                 "starting with the same shm_name") from None
    except BaseException:
        _give_back(found)
        arena.unlink()
        arena.close()
        raise
    return arena, adopted


def _adopt(found: Found, arena: Arena, cfg: Any, state_dir: Path) -> int:
    """Copy the dead server's items into `arena`; the number of items recovered."""
    assert found.arena is not None
    contents = found.arena.take_all_and_close()
    defined = {q.name for q in cfg.queues}
    total = sum(len(items) for _, items in contents)
    queues = sum(1 for _, items in contents if items)
    for queue, items in contents:
        if not items:
            continue
        if queue in defined:
            left = _add_all(arena, queue, items)
            if left:
                path = orphan_path(state_dir, queue)
                append_items(path, left)
                log.warning("queue '%s': %d adopted item(s) did not fit in the new arena "
                            "(shm_size): %d item(s) written to the fallback file %s", queue,
                            len(left), len(left), path)
        else:
            path = orphan_path(state_dir, queue)
            append_items(path, items)
            log.warning("queue '%s' is no longer defined: its %d adopted item(s) written to "
                        "the fallback file %s", queue, len(items), path)
    log.warning("recovered %d item(s) in %d queue(s) from the arena of a server that died "
                "(pid %d)", total, queues, found.owner_pid)
    return total


def _add_all(arena: Arena, queue: str, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Add the items in order (size and addmode apply); those from the first that does not
    fit on, which are returned."""
    for i, (key, value) in enumerate(items):
        try:
            arena.add(queue, key, value)
        except ArenaFull:
            return items[i:]
    return []


def _give_back(found: Found) -> None:
    """The adoption did not finish: the dead server's arena stays as it was, for the next
    start (opened again if it was closed for the copy)."""
    if found.arena is not None:
        if found.arena.closed:
            found.arena.mark_closed(False)
        found.arena.close()
        found.arena = None


def _remove_dead_temps(name: str) -> None:
    """Remove <name>.new-<pid> arenas of servers that died while preparing them: the arena
    they were adopting is still under `name`, whole, so they hold only copies."""
    prefix = f"{name}{TEMP_INFIX}"
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return
    for entry in entries:
        pid_text = entry[len(prefix):] if entry.startswith(prefix) else ""
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if process_start_time(int(pid_text)):
            continue  # that server is alive (and starting): its file
        path = Path(SHM_DIR, entry)
        try:
            if path.lstat().st_uid != os.geteuid():
                continue
            path.unlink()
        except OSError:
            continue
        log.warning("removed %s, an arena copy left by a server (pid %s) that died while "
                    "adopting %s", path, pid_text, name)
