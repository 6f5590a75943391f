"""A real Prometheus (Debian's `prometheus`, which scripts/test.sh installs) scrapes a real
server's GET /metrics every second; its HTTP API then answers each queue's size as the MI
reports it, after adds and after fetches."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.serverproc import free_port

PROMETHEUS = "/usr/bin/prometheus"
WAIT = 20.0  # bound on every wait: a scrape a second, Prometheus' start


@pytest.fixture
def prometheus(short_tmp):
    """start(target_port) -> the API's base URL; Prometheus stopped at the end."""
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} is missing: scripts/test.sh installs Debian's prometheus")
    procs: list[subprocess.Popen] = []

    def start(target: int) -> str:
        home = short_tmp / "prometheus"
        (home / "data").mkdir(parents=True)
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                  "scrape_configs": [{"job_name": "mqueue",
                                      "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}]}
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(home / "prometheus.log", "wb")
        procs.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}",
             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        base = f"http://127.0.0.1:{port}"
        _until(lambda: _get(f"{base}/-/ready") is not None, "Prometheus to be ready",
               home / "prometheus.log")
        return base

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(short_tmp / "prometheus", ignore_errors=True)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()
    except OSError:
        return None


def _until(check, what: str, log: Path | None = None):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    detail = log.read_text(errors="replace")[-2000:] if log else ""
    raise AssertionError(f"no {what} within {WAIT} s {detail}")


def query(base: str, expr: str) -> list[dict]:
    raw = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if raw is None:
        return []
    doc = json.loads(raw)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def sizes_in_prometheus(base: str) -> dict[str, int]:
    return {r["metric"]["queue"]: int(float(r["value"][1]))
            for r in query(base, 'opensips_queue_size{job="mqueue"}')}


def sizes_in_mi(srv) -> dict[str, int]:
    return {q["name"]: int(q["size"]) for q in srv.mi("mq_get_sizes")["Queue"]}


def test_prometheus_sees_each_queues_size(servers, prometheus):
    weird = "calls.out-1"  # '.' and '-' are not in [a-zA-Z0-9_:]: only a label value
    srv = servers(queues=["name=q1", "name=q2", f"name={weird}"])
    base = prometheus(srv.port)
    _until(lambda: query(base, 'up{job="mqueue"} == 1'), "successful scrape (up == 1)")

    def settled(want: dict[str, int]) -> None:
        _until(lambda: sizes_in_prometheus(base) == want, f"sizes {want} in Prometheus")

    settled({"q1": 0, "q2": 0, weird: 0})
    for i in range(5):
        srv.mi("mq_add", ["q1", f"k{i}", "v"])
    for i in range(2):
        srv.mi("mq_add", [weird, f"k{i}", "v"])
    want = sizes_in_mi(srv)
    assert want == {"q1": 5, "q2": 0, weird: 2}
    settled(want)

    srv.mi("mq_fetch", {"name": "q1", "limit": 3})
    srv.mi("mq_fetch", [weird])
    srv.mi("mq_add", ["q2", "k", "v"])
    want = sizes_in_mi(srv)
    assert want == {"q1": 2, "q2": 1, weird: 1}
    settled(want)
    # the counters behind the sizes arrive too, as counters (rate() works on them)
    added = {r["metric"]["queue"]: float(r["value"][1])
             for r in query(base, 'opensips_queue_added{job="mqueue"}')}
    assert added == {"q1": 5.0, "q2": 1.0, weird: 2.0}
