"""GET /metrics: the statistics in the Prometheus text format, like OpenSIPS's prometheus
module, rendered by prometheus_client from a custom collector reading the engine.

Naming as OpenSIPS's module names a statistic: prefix + delimiter + (group_mode 1: group +
delimiter) + the statistic's name, characters outside [a-zA-Z0-9_:] replaced by `_`;
group_mode 2 puts the group in a label (group_label) instead. Types as it decides them: a
statistic that cannot be reset is a gauge, any other a counter.

Ours: a per-queue statistic `<q>_<suffix>` (mqueue: group) is exported as the one metric
`queue_<suffix>` with a `queue="<q>"` label, so one PromQL expression covers every queue
and a queue name needs no mangling (label values take any text). prometheus_client writes
what the Prometheus text format 0.0.4 allows and OpenSIPS's module does not: a `# HELP`
line per metric, counters' samples named `<name>_total`, values as floats (`3.0`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from mi_server.config import MetricsConfig
from mi_server.mi.commands.statistics import MQUEUE, Stat

CONTENT_TYPE = "text/plain; version=0.0.4"  # what OpenSIPS's module sends
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_:]")



def metric_name(settings: MetricsConfig, group: str, name: str) -> str:
    parts = [settings.prefix] if settings.prefix else []
    if settings.group_mode == 1:
        parts.append(group)
    parts.append(name)
    return _NOT_NAME.sub("_", settings.delimiter.join(parts))


class StatsCollector(Collector):
    """One scrape: the statistics selected, read once, as metric families in
    `get_statistics all` order (a per-queue family at its first queue's place)."""

    def __init__(self, settings: MetricsConfig, read: Callable[[], list[Stat]]) -> None:
        self.settings = settings
        self.read = read

    def collect(self) -> Iterator[Metric]:
        s = self.settings
        families: dict[str, Metric] = {}
        for st in self.read():
            per_queue = st.group == MQUEUE and st.suffix is not None
            name = metric_name(s, st.group, f"queue_{st.suffix}" if per_queue else st.name)
            family = families.get(name)
            labels: list[str] = []
            values: list[str] = []
            if s.group_mode == 2:
                labels.append(s.group_label)
                values.append(st.group)
            if per_queue:
                labels.append("queue")
                values.append(st.queue or "")
            if family is None:
                kind = CounterMetricFamily if st.resettable else GaugeMetricFamily
                family = kind(name, f"{st.group} statistic" if not per_queue
                              else f"{st.group} statistic <queue>_{st.suffix}",
                              labels=labels)
                families[name] = family
            family.add_metric(values, st.value)
        return iter(families.values())


def render(settings: MetricsConfig, stats: Iterable[Stat]) -> bytes:
    """The exposition text of `stats` (already selected)."""
    listed = list(stats)
    return generate_latest(StatsCollector(settings, lambda: listed))
