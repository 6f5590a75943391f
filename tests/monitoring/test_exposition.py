"""The /metrics exposition as prometheus_client's own parser reads it, for every group_mode:
names, types, labels and values pinned against the statistics get_statistics reports over
a real arena; the OpenSIPS prometheus module's parameters each change what they should."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mi_server.config import ConfigError, MetricsConfig, parse_config
from mi_server.engine import QueueSpec
from mi_server.mi import MIContext
from mi_server.mi.commands.statistics import all_stats, selected
from mi_server.monitoring.prometheus import render
from tests.mi.arena_core import arena_core

WEIRD = "sip.events/é-1"  # '.', '/', '-' and a non-ASCII letter: none is in [a-zA-Z0-9_:]
SHMEM = ("total_size", "max_used_size", "free_size", "used_size", "real_used_size",
         "fragments")
PER_QUEUE = (("size", "gauge"), ("added", "counter"), ("fetched", "counter"),
             ("dropped_size", "counter"), ("dropped_addmode", "counter"),
             ("oldest_age", "gauge"))


def scrape(ctx: MIContext, settings: MetricsConfig) -> dict[str, tuple[str, list]]:
    """{family name: (type, [(sample name, labels, value)])} as the parser reads it."""
    stats = [st for _, st in selected(all_stats(ctx), list(settings.statistics), True)]
    text = render(settings, stats).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in out, f"{fam.name} twice"
        out[fam.name] = (fam.type, [(s.name, s.labels, s.value) for s in fam.samples])
    return out


@pytest.fixture
def served():
    """A real arena with q (3 items, one fetched) and the weird name (2 items, 1 dropped)."""
    specs = [QueueSpec("q"), QueueSpec(WEIRD, size=1)]
    with arena_core(specs) as (core, arena):
        for i in range(4):
            arena.add("q", f"k{i}", "v")
        arena.fetch("q")
        arena.add(WEIRD, "a", "1")
        arena.add(WEIRD, "b", "2")  # the queue holds 1: a is dropped
        yield MIContext(engine=arena, started=time.time() - 5), arena


def _family_names(prefix: str, group: bool) -> list[str]:
    """The families in order; the parser names a counter's family without its _total."""
    def name(grp: str, stat: str) -> str:
        return f"{prefix}{grp + '_' if group else ''}{stat}"
    return ([name("shmem", s) for s in SHMEM] + [name("core", "timestamp")]
            + [name("mqueue", f"queue_{s}") for s, _ in PER_QUEUE])


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_every_group_mode_parses_with_names_types_and_labels(served, mode):
    ctx, arena = served
    fams = scrape(ctx, MetricsConfig(group_mode=mode))
    assert list(fams) == _family_names("opensips_", group=(mode == 1))
    group_label = (lambda g: {"group": g}) if mode == 2 else (lambda g: {})
    pre = "opensips_" + ("shmem_" if mode == 1 else "")
    memory = arena.memory()
    for stat in SHMEM:
        kind, samples = fams[pre + stat]
        assert kind == "gauge"  # cannot be reset, as OpenSIPS's module decides
        assert samples == [(pre + stat, group_label("shmem"), float(getattr(memory, stat)))]
    core = "opensips_" + ("core_" if mode == 1 else "") + "timestamp"
    kind, [(name, labels, value)] = fams[core]
    assert (kind, name, labels) == ("gauge", core, group_label("core"))
    assert 5 <= value <= 7
    pre = "opensips_" + ("mqueue_" if mode == 1 else "")
    want = {"q": {"size": 3, "added": 4, "fetched": 1, "dropped_size": 0,
                  "dropped_addmode": 0},
            WEIRD: {"size": 1, "added": 2, "fetched": 0, "dropped_size": 1,
                    "dropped_addmode": 0}}
    for suffix, kind in PER_QUEUE:
        fam = pre + "queue_" + suffix
        got_kind, samples = fams[fam]
        assert got_kind == kind
        # the parser names a counter's samples <name>_total; the text has <name> (as OpenSIPS)
        sample = fam + ("_total" if kind == "counter" else "")
        # one metric for every queue, the queue's name as it is (a label value takes any text)
        assert [(n, lab["queue"]) for n, lab, _ in samples] == [(sample, "q"), (sample, WEIRD)]
        for _, labels, value in samples:
            assert labels == {**group_label("mqueue"), "queue": labels["queue"]}
            if suffix != "oldest_age":
                assert value == want[labels["queue"]][suffix]
            else:
                assert 0 <= value <= 2


def test_values_are_what_get_statistics_answers(served):
    ctx, _ = served
    stats = {st.full_name: st.value for st in all_stats(ctx)}
    fams = scrape(ctx, MetricsConfig(group_mode=1))
    for full, value in stats.items():
        group, _, name = full.partition(":")
        if group == "mqueue":
            queue = "q" if name.startswith("q_") else WEIRD
            suffix = name[len(queue) + 1:]
            _, samples = fams[f"opensips_mqueue_queue_{suffix}"]
            got = [v for _, lab, v in samples if lab["queue"] == queue]
        else:
            _, samples = fams[f"opensips_{group}_{name}"]
            got = [v for _, _, v in samples]
        if name.endswith(("_oldest_age", "timestamp")):
            assert got[0] - value in (0, 1)  # a clock: read a moment later
        else:
            assert got == [value], full


def test_prefix_delimiter_and_group_label(served):
    ctx, _ = served
    fams = scrape(ctx, MetricsConfig(prefix="mq", delimiter=":", group_mode=1))
    assert "mq:shmem:total_size" in fams and "mq:mqueue:queue_size" in fams
    # characters outside [a-zA-Z0-9_:] in the prefix or delimiter become '_', as OpenSIPS
    fams = scrape(ctx, MetricsConfig(prefix="my-app", delimiter=".", group_mode=1))
    assert "my_app_core_timestamp" in fams and "my_app_mqueue_queue_added" in fams
    fams = scrape(ctx, MetricsConfig(prefix="", group_mode=0))
    assert "total_size" in fams and "queue_size" in fams
    fams = scrape(ctx, MetricsConfig(group_mode=2, group_label="grp"))
    _, samples = fams["opensips_queue_size"]
    assert [lab for _, lab, _ in samples] == [{"grp": "mqueue", "queue": "q"},
                                               {"grp": "mqueue", "queue": WEIRD}]


def test_statistics_selection(served):
    ctx, _ = served
    assert list(scrape(ctx, MetricsConfig(statistics=("shmem:",)))) == \
        [f"opensips_{s}" for s in SHMEM]
    fams = scrape(ctx, MetricsConfig(statistics=("q_size", "timestamp", "core:")))
    # a statistic named twice (timestamp, core:) is exported once
    assert list(fams) == ["opensips_queue_size", "opensips_timestamp"]
    assert [lab["queue"] for _, lab, _ in fams["opensips_queue_size"][1]] == ["q"]
    assert scrape(ctx, MetricsConfig(statistics=("nothing_like_this",))) == {}


def _metrics(section: dict) -> MetricsConfig | None:
    return parse_config({"http": {"listen": "127.0.0.1:1", "metrics": section}}, "t.yaml",
                        Path(".")).http.metrics


def test_configuration_keys():
    assert _metrics({}) == MetricsConfig()
    assert MetricsConfig() == MetricsConfig(root="metrics", prefix="opensips", delimiter="_",
                                            group_mode=0, group_label="group",
                                            statistics=("all",), auth=False)
    cfg = _metrics({"root": "/prom/", "prefix": "mq", "delimiter": ":", "group_mode": 2,
                    "group_label": "grp", "statistics": ["mqueue:", "shmem:"]})
    assert cfg == MetricsConfig(root="prom", prefix="mq", delimiter=":", group_mode=2,
                                group_label="grp", statistics=("mqueue:", "shmem:"))
    assert _metrics({"statistics": "core:"}).statistics == ("core:",)
    assert _metrics({"enabled": False}) is None


@pytest.mark.parametrize("section, where", [
    ({"group_mode": 3}, "http.metrics.group_mode"),
    ({"group_mode": True}, "http.metrics.group_mode"),
    ({"group_label": "9x"}, "http.metrics.group_label"),
    ({"group_label": "queue"}, "http.metrics.group_label"),  # the per-queue label's name
    ({"group_label": "__name"}, "http.metrics.group_label"),  # reserved by Prometheus
    ({"statistics": []}, "http.metrics.statistics"),
    ({"statistics": [1]}, "http.metrics.statistics"),
    ({"root": "mi"}, "http.metrics.root"),
    ({"root": "mi/metrics"}, "http.metrics.root"),
    ({"auth": True}, "http.metrics.auth"),  # without http.auth: no credentials to ask for
    ({"colour": "red"}, "http.metrics"),
])
def test_bad_configuration_is_named(section, where):
    with pytest.raises(ConfigError) as info:
        _metrics(section)
    assert any(where in p for p in info.value.problems), info.value.problems


def test_the_text_as_opensips_writes_it():
    """TYPE lines only, integer values, a counter's samples under its own name, every
    queue's sample under one TYPE line; a label value's backslash, quote and line feed
    escaped, any other character (UTF-8) as it is."""
    odd = 'a"b\\c\nd é'
    with arena_core([QueueSpec("q"), QueueSpec(odd)], [("q", "k", "v")]) as (_, arena):
        ctx = MIContext(engine=arena, started=time.time())
        stats = [st for st in all_stats(ctx) if st.group == "mqueue"
                 and st.suffix in ("size", "added")]
        text = render(MetricsConfig(group_mode=2, group_label="grp"), stats).decode()
        label = 'a\\"b\\\\c\\nd é'
        assert text == (
            '# TYPE opensips_queue_size gauge\n'
            'opensips_queue_size{grp="mqueue",queue="q"} 1\n'
            f'opensips_queue_size{{grp="mqueue",queue="{label}"}} 0\n'
            '# TYPE opensips_queue_added counter\n'
            'opensips_queue_added{grp="mqueue",queue="q"} 1\n'
            f'opensips_queue_added{{grp="mqueue",queue="{label}"}} 0\n')
        [size, _] = text_string_to_metric_families(text)
        assert [s.labels["queue"] for s in size.samples] == ["q", odd]
        shmem = [st for st in all_stats(ctx) if st.group == "shmem"][:1]
        assert render(MetricsConfig(), shmem).decode() == (
            f"# TYPE opensips_total_size gauge\nopensips_total_size {1 << 20}\n")
        assert render(MetricsConfig(), []) == b""


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_the_default_page_is_the_same_text_for_less(served, mode):
    """render_all (the default selection, 'all') writes what render writes from
    all_stats; with no queue too."""
    from mi_server.monitoring.prometheus import render_all

    ctx, _ = served
    settings = MetricsConfig(group_mode=mode, prefix="p-x", delimiter=":")
    for _ in range(3):  # a clock may tick between the two reads
        if render_all(settings, ctx) == render(settings, all_stats(ctx)):
            break
    else:
        assert render_all(settings, ctx).decode() == render(settings, all_stats(ctx)).decode()
    with arena_core([]) as (_, empty):
        bare = MIContext(engine=empty, started=time.time())
        assert render_all(settings, bare) == render(settings, all_stats(bare))
