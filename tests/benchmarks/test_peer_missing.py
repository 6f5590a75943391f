"""The benchmarks that compare with the Kamailio peer, run as a user runs them with a
--shared directory that does not hold the peer: one line of advice, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# every benchmark that looks for the peer (calls common.shared_dir)
PEER_BENCHMARKS = sorted(path.name for path in (ROOT / "benchmarks").glob("*.py")
                         if path.name != "common.py" and "shared_dir(" in path.read_text())


def test_every_peer_benchmark_is_found() -> None:
    assert {"mi_http.py", "mi_fifo.py", "mi_datagram.py", "fifo_floor.py",
            "fifo_instructions.py", "http_instructions.py"} <= set(PEER_BENCHMARKS)


@pytest.mark.parametrize("script", PEER_BENCHMARKS)
def test_a_missing_peer_is_one_line_of_advice(script: str, tmp_path: Path) -> None:
    bogus = tmp_path / "no-peer-here"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script),
                             "--shared", str(bogus)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{script}: no peers/kamailio/bench_client.py under {bogus}: ")
    assert "--shared DIR" in line and "docs/performance.md" in line


def test_mqmi_shared_is_read_when_there_is_no_option(tmp_path: Path) -> None:
    bogus = tmp_path / "elsewhere"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mi_http.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "MQMI_SHARED": str(bogus)})
    assert result.returncode == 1
    assert f"under {bogus}: " in result.stderr and "Traceback" not in result.stderr
