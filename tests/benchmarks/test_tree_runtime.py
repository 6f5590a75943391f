"""The benchmarks' second CPU figure: the scheduler's exact run time of a process tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from common import tree_runtime, with_runtime  # noqa: E402

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _busy_child_of_a_sleeper(seconds: float) -> subprocess.Popen:
    """A sleeping parent whose child spins for `seconds` of CPU and then sleeps."""
    code = (f"import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {BUSY.format(s=seconds)!r} "
            f"+ 'time.sleep(60)'])\n"
            f"time.sleep(60)\n")
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat"),
                    reason="no schedstat in this kernel")
def test_the_runtime_of_a_tree_counts_its_descendants():
    root = _busy_child_of_a_sleeper(0.4)
    try:
        time.sleep(0.2)  # the child is started, and spinning
        first = tree_runtime(root.pid)
        time.sleep(1.5)  # its 0.4 s of CPU is spent by now
        second = tree_runtime(root.pid)
        assert first is not None and second is not None
        assert 0.1 < second - first < 0.6  # most of the child's 0.4 s, and nothing else
        idle = tree_runtime(root.pid)
        time.sleep(0.3)
        assert tree_runtime(root.pid) - idle < 0.05  # asleep: no more run time
    finally:
        subprocess.run(["pkill", "-P", str(root.pid)], check=False)
        root.kill()
        root.wait()


def test_the_runtime_is_per_request_as_the_tick_figure_counts_requests():
    me = os.getpid()
    before = tree_runtime(me)
    t = time.process_time()
    while time.process_time() - t < 0.2:
        pass
    # 0.2 s of tick-sampled CPU over 2000 requests (100 us each): the same requests
    s = with_runtime({"server_cpu_s": 0.2, "server_cpu_us_per_req": 100.0}, me, before)
    assert 0.15 < s["server_runtime_s"] < 1.0
    assert s["server_runtime_us_per_req"] == pytest.approx(s["server_runtime_s"] / 2000 * 1e6,
                                                           abs=0.1)
    assert "server_runtime_s" not in with_runtime({"server_cpu_s": 0.2}, me, before)
