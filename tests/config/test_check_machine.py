"""`mi-server -c FILE --check` checks this machine for the configuration without starting
it: one line per problem and exit 1, warnings that do not change the exit code."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mi_server.engine.shm.layout import minimum_size
from mi_server.engine.spec import QueueSpec
from tests.serverproc import ROOT, private_dev_log

HTTP = {"listen": "127.0.0.1:1"}  # --check binds nothing: any port will do


@dataclass
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture
def other_user():
    """A real local user of its own (created for the test, removed after it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user")
    name = f"mqchk{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=30)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def check(tmp_path: Path, config: dict, launcher: list[str] | None = None,
          env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([*(launcher or []), sys.executable, "-m", "mi_server", "-c",
                             str(path), "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, **(env or {})))
    assert "Traceback" not in result.stderr
    prefix = f"{path}: "
    lines = result.stderr.splitlines()
    assert all(line.startswith(prefix) for line in lines), lines
    return result.returncode, [line[len(prefix):] for line in lines]


def test_a_missing_fifo_directory_and_reply_directory(tmp_path):
    code, lines = check(tmp_path, {"http": HTTP, "fifo": {
        "path": str(tmp_path / "gone" / "fifo"), "reply_dir": str(tmp_path / "nope")}})
    assert code == 1
    assert lines == [f"fifo.path: the directory {tmp_path / 'gone'} does not exist",
                     f"fifo.reply_dir: {tmp_path / 'nope'} is not an existing directory"]


def test_handlers_that_do_not_import_or_are_not_found(tmp_path):
    code, lines = check(tmp_path, {"http": HTTP, "mqueue": ["name=a", "name=b"],
                                   "consumers": [
                                       {"queue": "a", "handler": "no_such_module_x:run"},
                                       {"queue": "b", "handler": "no-such-command-x -v"}]})
    assert code == 1
    assert lines == [
        "consumer for queue 'a': handler 'no_such_module_x:run': cannot import "
        "'no_such_module_x': No module named 'no_such_module_x'",
        "consumer for queue 'b': handler 'no-such-command-x -v': command not found: "
        "'no-such-command-x'"]


@pytest.mark.parametrize("size", [1, "4K", "16K"])
def test_shm_size_below_the_arenas_minimum(tmp_path, size):
    code, lines = check(tmp_path, {"http": HTTP, "shm_size": size, "mqueue": ["name=q"]})
    least = minimum_size([QueueSpec("q")])
    assert code == 1
    (line,) = lines
    assert line.startswith("shm_size: ") and f"at least {least} bytes" in line


def test_shm_size_at_the_minimum_passes(tmp_path):
    least = minimum_size([QueueSpec("q")])
    assert check(tmp_path, {"http": HTTP, "shm_size": least, "mqueue": ["name=q"]}) == (0, [])


def test_shm_size_beyond_what_dev_shm_can_hold(tmp_path):
    st = os.statvfs("/dev/shm")
    too_big = st.f_blocks * st.f_frsize + (1 << 30)  # more than the whole tmpfs
    code, lines = check(tmp_path, {"http": HTTP, "shm_size": too_big})
    assert code == 1
    (line,) = lines
    assert line.startswith(f"shm_size: {too_big} bytes is more than /dev/shm can hold")


def test_shm_size_is_not_checked_for_the_redis_engine(tmp_path):
    st = os.statvfs("/dev/shm")
    too_big = st.f_blocks * st.f_frsize + (1 << 30)
    assert check(tmp_path, {"http": HTTP, "shm_size": too_big,
                            "engine": {"backend": "redis"}}) == (0, [])


def dbmode_config(tmp_path: Path, state_dir: Path) -> dict:
    (tmp_path / "db").mkdir(exist_ok=True)
    return {"http": HTTP, "db_url": f"sqlite://{tmp_path}/db/q.db",
            "mqueue": ["name=q;dbmode=1"], "state_dir": str(state_dir)}


def test_a_state_directory_others_may_write_is_unsafe(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    code, lines = check(tmp_path, dbmode_config(tmp_path, state))
    assert code == 1
    assert lines == [f"state directory {state} is not safe: it is writable by its group or "
                     "others (mode 0777; make it 0700)"]


def test_a_state_directory_of_another_user_is_unsafe(tmp_path, other_user):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, other_user.uid, other_user.gid)
    code, lines = check(tmp_path, dbmode_config(tmp_path, state))
    assert code == 1
    (line,) = lines
    assert line == (f"state directory {state} is not safe: it is owned by uid "
                    f"{other_user.uid}, not by this server's uid {os.geteuid()}")


def test_a_state_directory_that_is_a_symlink_is_unsafe(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(real)
    code, lines = check(tmp_path, dbmode_config(tmp_path, tmp_path / "state"))
    assert code == 1
    assert lines == [f"state directory {tmp_path / 'state'} is not safe: it is a symbolic "
                     "link"]


def test_a_safe_or_not_yet_made_state_directory_passes(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    assert check(tmp_path, dbmode_config(tmp_path, state)) == (0, [])
    assert check(tmp_path, dbmode_config(tmp_path, tmp_path / "later")) == (0, [])


def test_a_sqlite_file_in_a_missing_directory_is_reported_not_created(tmp_path):
    code, lines = check(tmp_path, {"http": HTTP, "db_url": f"sqlite://{tmp_path}/no/q.db",
                                   "mqueue": ["name=q;dbmode=1"]})
    assert code == 1
    assert f"db_url: the directory {tmp_path / 'no'} of the SQLite file does not exist (it " \
           "is not created: create it, or fix the path)" in lines
    assert not (tmp_path / "no").exists()


def test_the_default_example_checks_ok():
    result = subprocess.run([sys.executable, "-m", "mi_server", "-c",
                             "examples/default.yaml", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "configuration OK (3 queue(s))" in result.stdout


def test_a_configuration_without_any_transport_is_warned_about(tmp_path):
    code, lines = check(tmp_path, {"mqueue": ["name=q"], "http": {"enabled": False}})
    assert code == 0
    assert lines == ["warning: no transport is enabled (no http:, fifo: or datagram: "
                     "section, or all with enabled: false): nothing will answer MI commands"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "mi.example.org"])
def test_http_beyond_loopback_without_auth_is_warned_about(tmp_path, host):
    listen = f"[{host}]:8080" if ":" in host else f"{host}:8080"
    code, lines = check(tmp_path, {"http": {"listen": listen}})
    assert code == 0
    assert lines == [f"warning: HTTP listens on {host}:8080, beyond loopback, without "
                     "http.auth: anyone who can reach it can run every MI command "
                     "(mq_fetch, kill included)"]


@pytest.mark.parametrize("http", [{"listen": "0.0.0.0:8080", "auth": {"username": "a",
                                                                       "password": "b"}},
                                  {"listen": "127.0.0.2:8080"}, {"listen": "[::1]:8080"},
                                  {"listen": "localhost:8080"}])
def test_auth_or_loopback_is_not_warned_about(tmp_path, http):
    assert check(tmp_path, {"http": http}) == (0, [])


def test_syslog_without_a_syslog_socket_is_warned_about(tmp_path):
    launcher, env = private_dev_log(tmp_path / "private", None)
    code, lines = check(tmp_path, {"http": HTTP, "log_target": "syslog"}, launcher, env)
    assert code == 0
    (line,) = lines
    assert line.startswith("warning: log_target syslog: no syslog socket to log to "
                           "(/dev/log: No such file or directory")
    assert line.endswith("): the server will log to stderr instead")


def test_syslog_with_a_syslog_socket_is_not_warned_about(tmp_path):
    sock_path = tmp_path / "log.sock"
    launcher, env = private_dev_log(tmp_path / "private", sock_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(sock_path))
        assert check(tmp_path, {"http": HTTP, "log_target": "syslog"}, launcher, env) == (0, [])


def test_a_fifo_path_that_is_not_a_fifo(tmp_path):
    """What the start would refuse at fifo.path: a regular file.  A FIFO is fine, served
    or not: --check runs beside the server it is about to replace."""
    from mi_fifo.fifofile import claim_fifo
    from mi_server.config import FifoConfig

    path = tmp_path / "fifo"
    config = {"http": HTTP, "fifo": {"path": str(path), "reply_dir": str(tmp_path)}}
    path.write_text("notes\n")
    code, lines = check(tmp_path, config)
    assert (code, lines) == (1, [f"fifo.path: {path} exists and is not a FIFO (the start "
                                 "refuses to replace it: remove it or set another "
                                 "fifo.path)"])
    assert path.read_text() == "notes\n"
    path.unlink()
    os.mkfifo(path)
    assert check(tmp_path, config) == (0, [])
    path.unlink()
    fd = claim_fifo(FifoConfig(path=path, reply_dir=tmp_path))
    try:
        assert check(tmp_path, config) == (0, [])
    finally:
        os.close(fd)
