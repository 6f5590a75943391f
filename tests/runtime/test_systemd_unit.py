"""contrib/systemd: the unit passes `systemd-analyze verify`, and the configuration shipped
with it starts a server that tells systemd it is ready.

systemd-analyze checks that ExecStart's program exists, and the unit names the install
location of docs/operations.md (/opt/mqueue-mi/bin/mi-server), which this machine need
not have: the copy verified here differs from the shipped file in that one path, replaced
by the console script of this install. scripts/test.sh installs systemd where
systemd-analyze is missing; the verify test is skipped only where it is still absent.
"""

from __future__ import annotations

import configparser
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.serverproc import ROOT, START_TIMEOUT, Server, free_port

UNIT = ROOT / "contrib" / "systemd" / "mi-server.service"
UNIT_CONFIG = ROOT / "contrib" / "systemd" / "mi-server.yaml"
INSTALLED = "/opt/mqueue-mi/bin/mi-server"


def _service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return dict(parser["Service"])


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    console_script = Path(sys.executable).with_name("mi-server")
    assert console_script.exists(), "the project is not installed in this environment"
    text = UNIT.read_text()
    assert INSTALLED in text
    unit = tmp_path / "mi-server.service"
    unit.write_text(text.replace(INSTALLED, str(console_script)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    # verify only warns (exit 0) about unknown keys or bad values: any output is a failure
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_unit_settings():
    service = _service_section()
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"{INSTALLED} -c /etc/mqueue-mi/mi-server.yaml"
    assert service["User"] == service["Group"] == "mqueue-mi"
    assert service["RuntimeDirectory"] == "mqueue-mi"
    assert service["ProtectSystem"] == "strict"
    # opensips-cli's reply FIFOs are in the host's /tmp: a private /tmp would hide them
    assert service["PrivateTmp"] == "no"
    assert service["KillMode"] == "mixed"  # SIGTERM to the supervisor, which stops in order
    assert "ExecReload" not in service  # SIGHUP stops the server
    assert "RemoveIPC" not in service and "DynamicUser" not in service  # the arena survives


def test_shipped_configuration_starts_and_notifies(short_tmp):
    """The unit's configuration, its /run and /var/lib directories moved into the test's
    directory and its port to a free one: valid, and READY=1 arrives."""
    run_dir, state_dir = short_tmp / "run", short_tmp / "lib"
    run_dir.mkdir()
    state_dir.mkdir()
    port = free_port()
    text = (UNIT_CONFIG.read_text().replace("/run/mqueue-mi", str(run_dir))
            .replace("/var/lib/mqueue-mi", str(state_dir))
            .replace("reply_dir: /tmp/", f"reply_dir: {short_tmp}/")
            .replace("127.0.0.1:8888", f"127.0.0.1:{port}"))
    config = yaml.safe_load(text)
    assert "/tmp/opensips_fifo" not in text and "8888" not in text
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_tmp / "notify.sock"))
    notify.settimeout(START_TIMEOUT)
    server = Server(short_tmp, port, env={"NOTIFY_SOCKET": str(short_tmp / "notify.sock")})
    server.config = config
    server.fifo_path = run_dir / "opensips_fifo"
    try:
        server.config_path.write_text(yaml.safe_dump(config))
        check = subprocess.run([sys.executable, "-m", "mi_server", "-c",
                                str(server.config_path), "--check"],
                               capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        server.launch()
        assert b"READY=1" in notify.recv(4096).split(b"\n"), server.stderr()
        assert (run_dir / "mi-server.pid").read_text().strip() == str(server.proc.pid)
        assert server.fifo_mi("mq_get_sizes") == {"Queue": [
            {"name": "jobs", "size": 0}, {"name": "events", "size": 0}]}
        assert server.stop() == 0
        assert not (run_dir / "opensips_fifo").exists()
    finally:
        notify.close()
        server.kill()
