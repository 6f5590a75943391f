"""The command line, run as users run it: a real `python -m mi_server` subprocess."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from mi_server import __version__

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mi_server", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_of_a_valid_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("mqueue: ['name=q;size=3', {name: r}]\nhttp: {listen: 127.0.0.1:1}\n")
    result = run("-c", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_of_an_invalid_file_exits_1_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mqueue: ['name=q;size=x', 'name=q']\nhttp: {listen: nowhere}\n")
    result = run("--config", str(path), "--check")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: queue 'q': size: not an integer: 'x'",
        f"{path}: http.listen: bad address 'nowhere' (expected host:port, e.g. 127.0.0.1:8888)",
    ]
    assert "Traceback" not in result.stderr


def test_check_reports_yaml_syntax_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("mqueue:\n  - name=q\n  bad: [\n")
    result = run("-c", str(path), "--check")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{path}: line 3,") and "YAML error" in line


def test_check_of_a_missing_file_exits_1(tmp_path: Path) -> None:
    result = run("-c", str(tmp_path / "nope.yaml"), "--check")
    assert result.returncode == 1
    assert result.stderr.strip() == f"{tmp_path}/nope.yaml: cannot read: No such file or directory"


def test_config_is_required() -> None:
    result = run("--check")
    assert result.returncode == 2
    assert "-c/--config FILE is required" in result.stderr


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"mqueue-mi {__version__}"
    helped = run("--help")
    assert helped.returncode == 0
    assert "--check" in helped.stdout and "--create-tables" in helped.stdout


def test_help_shows_c_file_as_required_and_one_line_per_option() -> None:
    text = run("--help").stdout
    assert text.startswith("usage: mi-server -c FILE [--check | --create-tables]\n")
    assert "[-c FILE]" not in text
    options = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0].rstrip(",") for line in options] == [
        "-c", "--check", "--create-tables", "--version", "-h"]
    assert "(required)" in options[0]


def test_help_names_the_reference_the_signals_and_the_switches() -> None:
    text = run("--help").stdout
    for doc in ("docs/configuration.md", "docs/operations.md"):
        assert doc in text
        assert (ROOT / doc).is_file(), f"--help points at a missing {doc}"
    for word in ("SIGTERM", "SIGINT", "SIGHUP", "SIGKILL", "MQMI_FIFO_FASTPATH=0",
                 "MQMI_ENGINE_SPEEDUPS=0", "NOTIFY_SOCKET"):
        assert word in text
    from mi_server.runtime.supervisor import STOP_SIGNALS

    stop_line = next(line for line in text.splitlines() if "stop in order" in line)
    assert {w.rstrip(",") for w in stop_line.split()[:3]} == {s.name for s in STOP_SIGNALS}


def test_every_environment_switch_of_the_code_is_in_the_help() -> None:
    import re

    text = run("--help").stdout
    sources = [*ROOT.glob("mi_server/**/*.py"), *ROOT.glob("mi_fifo/**/*.py")]
    switches = {m for path in sources
                for m in re.findall(r'ENV = "(MQMI_[A-Z_]+)"', path.read_text())}
    assert switches >= {"MQMI_FIFO_FASTPATH", "MQMI_ENGINE_SPEEDUPS"}
    for name in switches:
        assert name in text


def test_create_tables_creates_only_missing_dbmode_tables(tmp_path: Path) -> None:
    path = tmp_path / "db.yaml"
    (tmp_path / "data").mkdir()  # a missing directory is an error, never created
    path.write_text("db_url: sqlite://data/q.db\n"
                    "mqueue: ['name=plain', 'name=kept;dbmode=1', {name: out, dbmode: 2}]\n")
    first = run("-c", str(path), "--create-tables")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["table 'kept': created", "table 'out': created"]
    second = run("-c", str(path), "--create-tables")
    assert second.stdout.splitlines() == ["table 'kept': exists", "table 'out': exists"]
    with sqlite3.connect(tmp_path / "data" / "q.db") as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"kept", "out"} <= names and "plain" not in names


def test_create_tables_reports_an_unreachable_database(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    path = tmp_path / "db.yaml"
    path.write_text(f"db_url: mysql://root@127.0.0.1:{closed_port}/test\n"
                    "mqueue: ['name=kept;dbmode=1']\n")
    result = run("-c", str(path), "--create-tables")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and "'kept'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_refuses_a_dbmode_on_the_redis_engine_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "redis.yaml"
    path.write_text("db_url: sqlite:///tmp/x.db\nengine: {backend: redis}\n"
                    "mqueue: ['name=q;dbmode=1', 'name=r']\n")
    result = run("-c", str(path), "--check")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: queue 'q': dbmode=1 is refused with the redis engine: its queues live in "
        f"Redis and outlive every instance (use 0)"]


def test_create_tables_widens_an_older_version_s_mysql_table(tmp_path: Path,
                                                             mysql_url: str) -> None:
    import uuid

    import pymysql

    from mi_server.storage.url import parse_db_url

    table = f"cli_{uuid.uuid4().hex[:12]}"
    u = parse_db_url(mysql_url)
    db = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password,
                         database=u.database, autocommit=True)
    try:
        with db.cursor() as cur:
            cur.execute(f"CREATE TABLE `{table}` (`id` BIGINT UNSIGNED NOT NULL "
                        "AUTO_INCREMENT PRIMARY KEY, `key` TEXT NOT NULL, `val` MEDIUMTEXT "
                        "NOT NULL) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
        path = tmp_path / "db.yaml"
        path.write_text(f"db_url: {mysql_url}\nmqueue: ['name={table};dbmode=1']\n")
        first = run("-c", str(path), "--create-tables")
        assert first.stdout.splitlines() == [
            f"table '{table}': exists, key and val widened to LONGTEXT"], first.stderr
        again = run("-c", str(path), "--create-tables")
        assert again.stdout.splitlines() == [f"table '{table}': exists"]
    finally:
        with db.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        db.close()
