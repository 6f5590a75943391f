"""OpenSIPS 3.6 statistics MI commands (statistics.c) over the engine.

Groups, in OpenSIPS's order where OpenSIPS has them (`get_statistics all` lists them so):
- `shmem:` total_size, max_used_size, free_size, used_size, real_used_size, fragments: the
  arena's allocator (Arena.memory(); see mi_server/engine/stats.py MemoryStats). Not
  resettable, as OpenSIPS's (function statistics).
- `core:` timestamp: seconds since the server started (OpenSIPS's is its timer's ticks,
  which count seconds from start). Its SIP counters (rcv_requests, ...) have no
  counterpart here and are not invented.
- `mqueue:` (ours) six statistics per queue `<q>`, in definition order:
    <q>_size             items queued now                 (cannot be reset)
    <q>_added            items accepted by an add         (resettable)
    <q>_fetched          items handed out by fetch
    <q>_dropped_size     oldest items evicted because the queue was full
    <q>_dropped_addmode  items dropped or replaced by addmode 1/2
    <q>_oldest_age       seconds the oldest queued item has waited, 0 when empty
                                                          (cannot be reset)
Lookup follows OpenSIPS: "all", "group:" prefixes (the group name case-insensitive), or one
statistic by its bare name (case-insensitive, the first match across groups); ours also
accepts the full "group:name" spelling of one statistic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from jsonrpcserver.result import Error, Result

from mi_server.mi.context import MIContext
from mi_server.mi.params import get_str_array
from mi_server.mi.results import success

SHMEM, CORE, MQUEUE = "shmem", "core", "mqueue"
GROUPS = (SHMEM, CORE, MQUEUE)  # every group we register, even when empty (no queues)
NOT_FOUND = (404, "Statistics Not Found")
SHMEM_NAMES = ("total_size", "max_used_size", "free_size", "used_size", "real_used_size",
               "fragments")
# (suffix, QueueStats attribute, resettable); oldest_age is derived from oldest_added_ns
COUNTERS = (
    ("size", "size", False),
    ("added", "added", True),
    ("fetched", "fetched", True),
    ("dropped_size", "dropped_size", True),
    ("dropped_addmode", "dropped_addmode", True),
)
OLDEST_AGE = "oldest_age"


class Stat:
    """One statistic's current value. `queue`/`counter` name what reset_statistics resets
    (mqueue counters only); `suffix` is the per-queue statistic's name without the queue."""

    __slots__ = ("group", "name", "value", "resettable", "queue", "counter", "suffix")

    def __init__(self, group: str, name: str, value: int, resettable: bool = False,
                 queue: str | None = None, counter: str | None = None,
                 suffix: str | None = None) -> None:
        self.group, self.name, self.value, self.resettable = group, name, value, resettable
        self.queue, self.counter, self.suffix = queue, counter, suffix

    @property
    def full_name(self) -> str:
        return f"{self.group}:{self.name}"


def _shmem_stats(engine: Any) -> list[Stat]:
    memory = getattr(engine, "memory", None)
    if memory is None:  # an engine without a shared arena of its own has no shmem: group
        return []
    m = memory()
    return [Stat(SHMEM, name, getattr(m, name)) for name in SHMEM_NAMES]


# every per-queue statistic: (suffix, resettable), in definition order
PER_QUEUE = tuple((suffix, resettable) for suffix, _, resettable in COUNTERS) + (
    (OLDEST_AGE, False),)


def queue_values(st: Any, now_ns: int) -> tuple[int | None, ...]:
    """One queue's statistics (QueueStats), in PER_QUEUE order; the age None where the
    engine records no add time (the statistic is then absent)."""
    oldest = st.oldest_added_ns
    age = None if oldest is None else max(0, (now_ns - oldest) // 1_000_000_000) if oldest \
        else 0
    return (st.size, st.added, st.fetched, st.dropped_size, st.dropped_addmode, age)


def fixed_stats(ctx: MIContext) -> list[Stat]:
    """The statistics that are not per queue: shmem: then core:."""
    out = _shmem_stats(ctx.engine)
    out.append(Stat(CORE, "timestamp", max(0, int(time.time() - ctx.started))))
    return out


def all_stats(ctx: MIContext) -> list[Stat]:
    """Every statistic, in `get_statistics all` order (also what /metrics exposes)."""
    out = fixed_stats(ctx)
    now_ns = time.time_ns()
    for q, st in ctx.engine.stats().items():
        for (suffix, resettable), (_, attr, _), value in zip(
                PER_QUEUE, COUNTERS + ((OLDEST_AGE, None, False),), queue_values(st, now_ns),
                strict=True):
            if value is not None:
                out.append(Stat(MQUEUE, f"{q}_{suffix}", value, resettable, q, attr,
                                suffix))
    return out


def _find_one(stats: list[Stat], text: str) -> Stat | None:
    for st in stats:  # exact first: queue names themselves are case-sensitive
        if st.name == text or st.full_name == text:
            return st
    folded = text.lower()
    for st in stats:
        if st.name.lower() == folded or st.full_name.lower() == folded:
            return st
    return None


def _group_of(text: str) -> str | None:
    """The registered group a "group:" text names, else None."""
    if len(text) > 1 and text.endswith(":"):
        name = text[:-1].lower()
        if name in GROUPS:
            return name
    return None


def _is_group(text: str) -> bool:
    return len(text) > 1 and text.endswith(":")


def selected(stats: list[Stat], texts: list[str], allow_all: bool) -> Iterator[tuple[bool, Stat]]:
    """(is_group_member, stat) for every statistic the texts name, in request order."""
    for text in texts:
        if allow_all and text == "all":
            yield from ((True, st) for st in stats)
        elif _is_group(text):
            group = _group_of(text)
            yield from ((True, st) for st in stats if st.group == group)
        else:
            st = _find_one(stats, text)
            if st is not None:
                yield False, st


def _matches_a_group(texts: list[str], allow_all: bool) -> bool:
    """A registered (possibly empty) group or "all" was named: an empty result is no 404."""
    return any((allow_all and t == "all") or _group_of(t) is not None for t in texts)


def _kind(st: Stat) -> str:
    return "incremental" if st.resettable else "non-incremental"


def get_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    texts = get_str_array(params, "statistics")
    out = {st.full_name: st.value for _, st in selected(all_stats(ctx), texts, True)}
    if not out and not _matches_a_group(texts, True):
        return Error(*NOT_FOUND)
    return success(out)


def list_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    """[] → every statistic and its kind; [statistics] → the ones named."""
    if "statistics" not in params:
        return success({st.full_name: _kind(st) for st in all_stats(ctx)})
    texts = get_str_array(params, "statistics")
    out: dict[str, str] = {}
    matched = False
    for grouped, st in selected(all_stats(ctx), texts, False):
        # OpenSIPS names a single statistic without its group here (mi_list_stat(.., NULL, ..)).
        out[st.full_name if grouped else st.name] = _kind(st)
        matched = True
    if not matched and not _matches_a_group(texts, False):
        return Error(*NOT_FOUND)
    return success(out)


def reset_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    texts = get_str_array(params, "statistics")
    stats = all_stats(ctx)
    found = False
    for text in texts:  # single statistics only, as in OpenSIPS
        st = _find_one(stats, text)
        if st is None:
            continue
        found = True
        if st.resettable:
            ctx.engine.reset_stats(st.queue, st.counter)  # only the named one, as OpenSIPS
    if not found:
        return Error(*NOT_FOUND)
    return success("OK")


def reset_all_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    ctx.engine.reset_stats(None)
    return success("OK")
