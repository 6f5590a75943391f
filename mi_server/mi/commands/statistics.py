"""OpenSIPS 3.6 statistics MI commands (statistics.c) over the engine's per-queue counters.

Ours: one group, `mqueue`, with five statistics per queue `<q>`, in definition order:
  <q>_size             items queued now          (non-incremental: cannot be reset)
  <q>_added            items accepted by an add  (incremental)
  <q>_fetched          items handed out by fetch (incremental)
  <q>_dropped_size     oldest items evicted because the queue was full
  <q>_dropped_addmode  items dropped or replaced by addmode 1/2
Lookup follows OpenSIPS: "all", "group:" prefixes, or one statistic by its bare name
(case-insensitive); ours also accepts the full "mqueue:<name>" spelling of one statistic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonrpcserver.result import Error, Result

from mi_server.mi.context import MIContext
from mi_server.mi.params import get_str_array
from mi_server.mi.results import success

GROUP = "mqueue"
NOT_FOUND = (404, "Statistics Not Found")
# (suffix, QueueStats attribute, resettable)
COUNTERS = (
    ("size", "size", False),
    ("added", "added", True),
    ("fetched", "fetched", True),
    ("dropped_size", "dropped_size", True),
    ("dropped_addmode", "dropped_addmode", True),
)


class Stat:
    __slots__ = ("name", "queue", "counter", "value", "resettable")

    def __init__(self, name: str, queue: str, counter: str, value: int,
                 resettable: bool) -> None:
        self.name, self.queue, self.counter = name, queue, counter
        self.value, self.resettable = value, resettable


def _all_stats(ctx: MIContext) -> list[Stat]:
    return [
        Stat(f"{q}_{suffix}", q, attr, getattr(st, attr), resettable)
        for q, st in ctx.engine.stats().items()
        for suffix, attr, resettable in COUNTERS
    ]


def _find_one(stats: list[Stat], text: str) -> Stat | None:
    for st in stats:  # exact first: queue names themselves are case-sensitive
        if st.name == text or f"{GROUP}:{st.name}" == text:
            return st
    folded = text.lower()
    for st in stats:
        if st.name.lower() == folded or f"{GROUP}:{st.name}".lower() == folded:
            return st
    return None


def _is_group(text: str) -> bool:
    return len(text) > 1 and text.endswith(":")


def _group_stats(stats: list[Stat], text: str) -> list[Stat] | None:
    return stats if text[:-1].lower() == GROUP else None


def _selected(stats: list[Stat], texts: list[str], allow_all: bool) -> Iterator[tuple[bool, Stat]]:
    """(is_group_member, stat) for every statistic the texts name, in request order."""
    for text in texts:
        if allow_all and text == "all":
            yield from ((True, st) for st in stats)
        elif _is_group(text):
            yield from ((True, st) for st in _group_stats(stats, text) or ())
        else:
            st = _find_one(stats, text)
            if st is not None:
                yield False, st


def _kind(st: Stat) -> str:
    return "incremental" if st.resettable else "non-incremental"


def get_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    texts = get_str_array(params, "statistics")
    out = {f"{GROUP}:{st.name}": st.value for _, st in _selected(_all_stats(ctx), texts, True)}
    # "all" with no queues matches (an empty object), as in OpenSIPS; nothing else → 404.
    if not out and not any(t == "all" or (_is_group(t) and t[:-1].lower() == GROUP)
                           for t in texts):
        return Error(*NOT_FOUND)
    return success(out)


def list_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    """[] → every statistic and its kind; [statistics] → the ones named."""
    if "statistics" not in params:
        return success({f"{GROUP}:{st.name}": _kind(st) for st in _all_stats(ctx)})
    texts = get_str_array(params, "statistics")
    out: dict[str, str] = {}
    matched = False
    for grouped, st in _selected(_all_stats(ctx), texts, False):
        # OpenSIPS names a single statistic without its group here (mi_list_stat(.., NULL, ..)).
        out[f"{GROUP}:{st.name}" if grouped else st.name] = _kind(st)
        matched = True
    if not matched and not any(_is_group(t) and t[:-1].lower() == GROUP for t in texts):
        return Error(*NOT_FOUND)
    return success(out)


def reset_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    texts = get_str_array(params, "statistics")
    stats = _all_stats(ctx)
    found = False
    for text in texts:  # single statistics only, as in OpenSIPS
        st = _find_one(stats, text)
        if st is None:
            continue
        found = True
        if st.resettable:
            _reset(ctx, st)
    if not found:
        return Error(*NOT_FOUND)
    return success("OK")


def _reset(ctx: MIContext, st: Stat) -> None:
    ctx.engine.reset_stats(st.queue, st.counter)  # only the named statistic, as OpenSIPS


def reset_all_statistics(ctx: MIContext, params: dict[str, Any]) -> Result:
    ctx.engine.reset_stats(None)
    return success("OK")
