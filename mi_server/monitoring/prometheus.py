"""GET /metrics: the statistics in the Prometheus text format 0.0.4, as OpenSIPS's
prometheus module writes them.

Naming as OpenSIPS's module names a statistic: prefix + delimiter + (group_mode 1: group +
delimiter) + the statistic's name, characters outside [a-zA-Z0-9_:] replaced by `_`;
group_mode 2 puts the group in a label (group_label) instead. Types as it decides them: a
statistic that cannot be reset is a gauge, any other a counter; `# TYPE` lines only, no
`# HELP`, integer values, a counter's samples under the metric's own name (no `_total`).

Ours: a per-queue statistic `<q>_<suffix>` (mqueue: group) is exported as the one metric
`queue_<suffix>` with a `queue="<q>"` label, so one PromQL expression covers every queue
and a queue name needs no mangling (a label value takes any text, escaped here).

Written by hand rather than through prometheus_client's collector API: measured, its
generate_latest alone costs 3-8 times a whole `get_statistics all` (2 and 100 queues,
benchmarks/metrics_scrape.py), and the scrape must cost no more than that. What it would
own is small and pinned by tests against its parser (tests/monitoring): name mangling,
the three escapes of a label value, one TYPE line per metric before its samples.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from mi_server.config import MetricsConfig
from mi_server.mi.commands.statistics import (
    MQUEUE,
    PER_QUEUE,
    Stat,
    fixed_stats,
    queue_values,
)
from mi_server.mi.context import MIContext

CONTENT_TYPE = "text/plain; version=0.0.4"  # what OpenSIPS's module sends
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_CACHE_LIMIT = 4096  # names and label sets remembered between scrapes (queues are few)


def metric_name(settings: MetricsConfig, group: str, name: str) -> str:
    parts = [settings.prefix] if settings.prefix else []
    if settings.group_mode == 1:
        parts.append(group)
    parts.append(name)
    out = _NOT_NAME.sub("_", settings.delimiter.join(parts))
    return "_" + out if out[:1].isdigit() else out  # a name cannot start with a digit


def label_value(text: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed
    escaped; everything else (UTF-8) as it is."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Names:
    """The metric name and label text of each statistic, worked out once per settings."""

    def __init__(self, settings: MetricsConfig) -> None:
        self.settings = settings
        self.cache: dict[tuple[str, str, str | None], tuple[str, str]] = {}
        self.queue_lines: dict[str, tuple[str, ...]] = {}  # q -> "name{labels} " per suffix
        self.type_lines = tuple(
            f"# TYPE {self.of(Stat(MQUEUE, 'x', 0, resettable, 'x', None, suffix))[0]} "
            f"{'counter' if resettable else 'gauge'}" for suffix, resettable in PER_QUEUE)

    def queue_prefixes(self, queue: str) -> tuple[str, ...]:
        """What comes before the value on each of a queue's sample lines."""
        found = self.queue_lines.get(queue)
        if found is None:
            if len(self.queue_lines) >= _CACHE_LIMIT:
                self.queue_lines.clear()
            found = self.queue_lines[queue] = tuple(
                "".join(self.of(Stat(MQUEUE, "", 0, False, queue, None, suffix))) + " "
                for suffix, _ in PER_QUEUE)
        return found

    def of(self, st: Stat) -> tuple[str, str]:
        per_queue = st.group == MQUEUE and st.suffix is not None
        key = (st.group, st.suffix if per_queue else st.name, st.queue if per_queue else None)
        found = self.cache.get(key)
        if found is not None:
            return found
        s = self.settings
        name = metric_name(s, st.group, f"queue_{st.suffix}" if per_queue else st.name)
        labels = []
        if s.group_mode == 2:
            labels.append(f'{s.group_label}="{label_value(st.group)}"')
        if per_queue:
            labels.append(f'queue="{label_value(st.queue or "")}"')
        found = (name, "{" + ",".join(labels) + "}" if labels else "")
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[key] = found
        return found


_namers: dict[MetricsConfig, _Names] = {}


def _namer(settings: MetricsConfig) -> _Names:
    namer = _namers.get(settings)
    if namer is None:
        namer = _namers[settings] = _Names(settings)
    return namer


def render(settings: MetricsConfig, stats: Iterable[Stat]) -> bytes:
    """The exposition text of `stats` (already selected), metrics in `get_statistics all`
    order, a per-queue metric at its first queue's place with every queue's sample."""
    namer = _namer(settings)
    families: dict[str, list[str]] = {}
    for st in stats:
        name, labels = namer.of(st)
        lines = families.get(name)
        if lines is None:
            lines = families[name] = [
                f"# TYPE {name} {'counter' if st.resettable else 'gauge'}"]
        lines.append(f"{name}{labels} {st.value}")
    return ("\n".join(line for lines in families.values() for line in lines)
            + "\n" if families else "").encode()


def render_all(settings: MetricsConfig, ctx: MIContext) -> bytes:
    """Every statistic, the same text as render(settings, all_stats(ctx)), for less: the
    engine's figures are read once, as get_statistics reads them, and each per-queue
    sample line is a remembered prefix plus the number (no Stat object per statistic)."""
    text = render(settings, fixed_stats(ctx)).decode()
    namer = _namer(settings)
    now_ns = time.time_ns()
    rows = [(namer.queue_prefixes(q), queue_values(st, now_ns))
            for q, st in ctx.engine.stats().items()]
    if not rows:
        return text.encode()
    lines = [text.rstrip("\n")] if text else []
    for i, type_line in enumerate(namer.type_lines):
        if rows[0][1][i] is None:  # not recorded by this engine (oldest_age on Redis)
            continue
        lines.append(type_line)
        lines.extend([prefixes[i] + str(values[i]) for prefixes, values in rows])
    return ("\n".join(lines) + "\n").encode()
