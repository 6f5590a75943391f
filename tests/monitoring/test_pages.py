"""GET /metrics and GET /health on a real server's HTTP listener: status, headers, body,
the pages' roots and switches, and their authentication rule."""

from __future__ import annotations

import base64

from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import get

AUTH = {"username": "ops", "password": "s3cret"}
GOOD = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
BAD = {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}


def _sizes(body: bytes) -> dict[str, float]:
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "opensips_queue_size":
            return {s.labels["queue"]: s.value for s in fam.samples}
    raise AssertionError("no opensips_queue_size")


def test_metrics_page(servers):
    srv = servers()
    srv.mi("mq_add", ["q1", "k", "v"])
    srv.mi("mq_add", ["q1", "k2", "v"])
    status, headers, body = get(srv.port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4"
    assert int(headers["content-length"]) == len(body)
    assert _sizes(body) == {"q1": 2.0, "q2": 0.0}
    assert b"# TYPE opensips_total_size gauge\nopensips_total_size " in body
    srv.mi("mq_fetch", ["q1"])
    assert _sizes(get(srv.port, "/metrics")[2]) == {"q1": 1.0, "q2": 0.0}
    status, headers, _ = get(srv.port, "/metrics", "POST")
    assert status == 405 and headers["allow"] == "GET"
    assert get(srv.port, "/metricsx")[0] == 400  # outside every root: OpenSIPS's 400 page


def test_health_page(servers):
    srv = servers()
    status, headers, body = get(srv.port, "/health")
    assert (status, headers["content-type"], body) == (200, "text/plain", b"OK\n")
    status, headers, body = get(srv.port, "/health", "HEAD")
    assert (status, headers["content-length"], body) == (200, "3", b"")
    status, headers, _ = get(srv.port, "/health", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_roots_and_switches(servers):
    srv = servers({"metrics": {"root": "prom/metrics", "prefix": "mq", "group_mode": 1,
                               "statistics": ["mqueue:"]},
                   "health": "ready"})
    status, _, body = get(srv.port, "/prom/metrics")
    assert status == 200
    names = [f.name for f in text_string_to_metric_families(body.decode())]
    assert names[0] == "mq_mqueue_queue_size" and all(n.startswith("mq_mqueue_") for n in names)
    assert get(srv.port, "/metrics")[0] == 400
    assert get(srv.port, "/ready")[0] == 200
    assert get(srv.port, "/health")[0] == 400
    off = servers({"metrics": {"enabled": False}, "health": None})
    assert get(off.port, "/metrics")[0] == 400 and get(off.port, "/health")[0] == 400
    assert off.mi("uptime")  # MI itself is still served


def test_pages_need_no_credentials_unless_configured(servers):
    srv = servers({"auth": AUTH})
    assert srv.post(b'{"jsonrpc":"2.0","method":"uptime","id":1}', BAD)[0] == 401  # MI asks
    assert get(srv.port, "/metrics")[0] == 200
    assert get(srv.port, "/health")[0] == 200


def test_pages_ask_for_credentials_when_configured(servers):
    srv = servers({"auth": AUTH, "metrics": {"auth": True},
                   "health": {"root": "health", "auth": True}})
    for path in ("/metrics", "/health"):
        status, headers, _ = get(srv.port, path)
        assert status == 401 and headers["www-authenticate"] == 'Basic realm="OpenSIPS MI"'
        assert get(srv.port, path, headers=BAD)[0] == 401
        assert get(srv.port, path, headers=GOOD)[0] == 200
    only_metrics = servers({"auth": AUTH, "metrics": {"auth": True}})
    assert get(only_metrics.port, "/metrics")[0] == 401
    assert get(only_metrics.port, "/health")[0] == 200
