"""Instances and Redis really apart: Redis runs in a network namespace of its own, reached
over a veth link that the test cuts and restores.  The cut makes packets vanish silently in
both directions, as on a pulled cable (time-outs, not refusals): each end's neighbour entry
for the other points at a MAC address nobody has, so frames are sent and dropped by the
receiving interface.  (Taking an end of the veth down instead would not do: the other
end queues what is sent meanwhile and delivers it when the link comes back.)"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.redisproc import RedisServer
from tests.serverproc import MIError, Server, free_port


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Link:
    """A namespace `ns`, a veth pair host <-> ns on a /30 of its own."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.ns = f"mqr{tag}"
        self.host_if, self.ns_if = f"mqh{tag}", f"mqn{tag}"
        a, b = random.randint(200, 250), random.randint(0, 255)
        c = random.randrange(0, 256, 4)
        self.host_ip, self.ns_ip = f"10.{a}.{b}.{c + 1}", f"10.{a}.{b}.{c + 2}"

    def create(self) -> Link:
        ip("netns", "add", self.ns)
        try:
            ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            ip("link", "set", self.ns_if, "netns", self.ns)
            ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            ip("link", "set", self.host_if, "up")
            ip("netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev",
               self.ns_if)
            ip("netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
            ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def cut(self) -> None:
        ip("neigh", "replace", self.ns_ip, "lladdr", "02:00:00:00:00:01", "dev", self.host_if,
           "nud", "permanent")
        ip("netns", "exec", self.ns, "ip", "neigh", "replace", self.host_ip, "lladdr",
           "02:00:00:00:00:02", "dev", self.ns_if, "nud", "permanent")

    def restore(self) -> None:
        ip("neigh", "del", self.ns_ip, "dev", self.host_if)
        ip("netns", "exec", self.ns, "ip", "neigh", "del", self.host_ip, "dev", self.ns_if)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    try:
        made = Link().create()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr!r}")
    yield made
    made.remove()


def test_a_cut_link_fails_requests_clearly_and_quickly_then_they_serve_again(link, tmp_path):
    rds = RedisServer(tmp_path / "redis", free_port(), bind=link.ns_ip).start(netns=link.ns)
    servers: list[Server] = []
    try:
        for n in range(2):
            srv = Server(tmp_path / f"s{n}", free_port(), queues=["name=q"], extra={
                "engine": {"backend": "redis", "url": rds.url, "prefix": "net",
                           "timeout": 0.5}})
            (tmp_path / f"s{n}").mkdir()
            servers.append(srv.start())
        a, b = servers
        a.add("q", "before", "the cut")
        assert b.mi("mq_get_size", ["q"]) == {"Queue": {"name": "q", "size": 1}}
        link.cut()
        for call in (lambda: a.request("mq_add", ["q", "k", "v"]),
                     lambda: b.request("mq_fetch", ["q"]),
                     lambda: a.request("mq_get_sizes")):
            started = time.monotonic()
            reply = call()
            assert time.monotonic() - started < 5  # bounded: no hang on a silent link
            assert reply["error"] == {"code": 500, "message": "Queue engine unavailable"}
        with pytest.raises(MIError, match="500: Queue engine unavailable"):
            b.fifo_mi("mq_get_size", {"name": "q"})
        assert all(len(s.ps()) == s.expected_processes() for s in servers)
        link.restore()
        deadline = time.monotonic() + 20
        while "error" in b.request("mq_get_size", ["q"]):
            assert time.monotonic() < deadline, "not serving again after the link came back"
            time.sleep(0.2)
        # Redis itself never stopped: what was queued before the cut is still there, and
        # what failed during the cut did not run once the link came back (the add is not
        # there, the fetch did not take an item)
        time.sleep(1)
        assert b.fetch_all("q") == [("before", "the cut")]
        a.add("q", "after", "the cut")
        assert b.mi("mq_fetch", ["q", 5]) == [{"key": "after", "value": "the cut"}]
        for srv in servers:
            assert srv.stop() == 0
    finally:
        for srv in servers:
            srv.kill()
        rds.stop()
