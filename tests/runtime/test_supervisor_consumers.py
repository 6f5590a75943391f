"""Consumer processes inside the real server."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from tests.serverproc import ROOT, private_dev_log, wait_for

HANDLER = "mi_server.runtime.example_handlers:append_to_file"


def handled(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_pool_of_three_handles_each_item_exactly_once(servers, short_tmp):
    out = short_tmp / "out.jsonl"
    s = servers(consumers=[{"queue": "q1", "processes": 3, "batch": 5, "interval": 0.05,
                            "handler": HANDLER}],
                env={"MQ_EXAMPLE_FILE": str(out)}).start()
    n = 300
    for i in range(n):
        s.add("q1", f"k{i}", f"v{i}")
    wait_for(lambda: len(handled(out)) >= n, 20, f"all {n} items handled")
    assert s.mi("mq_get_size", {"name": "q1"})["Queue"]["size"] == 0
    assert s.stop() == 0
    items = handled(out)
    assert len(items) == n  # nothing handled twice, even after the wait
    assert sorted((i["key"], i["value"]) for i in items) == sorted(
        (f"k{i}", f"v{i}") for i in range(n))
    consumer_pids = {i["pid"] for i in items}
    assert consumer_pids and s.proc.pid not in consumer_pids


def test_a_failing_item_is_logged_and_the_next_one_is_handled(servers, short_tmp):
    out = short_tmp / "out.jsonl"
    s = servers(consumers=[{"queue": "q1", "handler":
                            "mi_server.runtime.example_handlers:fail_on_bad"}],
                env={"MQ_EXAMPLE_FILE": str(out)}).start()
    s.add("q1", "bad", "boom")
    s.add("q1", "good", "fine")
    wait_for(lambda: any(i["key"] == "good" for i in handled(out)), 10,
             "the item after the failing one to be handled")
    assert s.stop() == 0
    assert [i["key"] for i in handled(out)] == ["good"]
    assert "handler failed for queue='q1' key='bad' value='boom'" in s.stderr()
    assert "restarting" not in s.stderr()  # the consumer did not die


def test_a_command_line_consumer_sees_the_item_in_its_environment(servers, short_tmp):
    out = short_tmp / "out.txt"
    handler = f"sh -c 'echo \"$MQ_QUEUE $MQ_KEY $MQ_VALUE\" >> {out}'"
    s = servers(consumers=[{"queue": "q2", "handler": handler}]).start()
    s.add("q2", "key1", "value one")
    wait_for(lambda: out.exists() and out.read_text(), 10, "the command to run")
    assert s.stop() == 0
    assert out.read_text() == "q2 key1 value one\n"


def readme_consumers() -> list[dict]:
    """The consumers of docs/consumers.md's first example, parsed from the page itself."""
    page = (ROOT / "docs" / "consumers.md").read_text()
    block = page[page.index("```yaml") + len("```yaml"):]
    return yaml.safe_load(block[:block.index("```")])["consumers"]


def test_the_readmes_logger_consumer_logs_each_value_as_shown(servers, short_tmp):
    if shutil.which("logger") is None:
        pytest.skip("needs logger (util-linux)")
    (audit,) = [c for c in readme_consumers() if c["queue"] == "audit"]
    assert audit == {"queue": "audit", "handler": "logger -t mqueue-audit"}
    sock_path = short_tmp / "syslog.sock"
    # /dev/log is the test's own socket, in a private /dev: `logger` runs as installed
    launcher, env = private_dev_log(short_tmp / "private", sock_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(sock_path))
        syslog.settimeout(10)
        s = servers(queues=["name=audit"], fifo=False, consumers=[audit], env=env,
                    launcher=launcher)
        s.start()
        s.add("audit", "k1", "order 42 shipped")
        s.add("audit", "k2", "refund $5 * 'x'")
        got = [syslog.recv(65536).decode() for _ in range(2)]
        assert s.stop() == 0
    # RFC 3164 as logger writes it: <PRI>TIMESTAMP TAG: MESSAGE (user.notice = 13)
    assert [line.startswith("<13>") for line in got] == [True, True]
    assert [line.split(" mqueue-audit: ", 1)[1] for line in got] == [
        "order 42 shipped", "refund $5 * 'x'"]
    assert not Path("/dev/log").exists() or Path("/dev/log").resolve() != sock_path
