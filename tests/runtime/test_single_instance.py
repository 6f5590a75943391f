"""One server per FIFO and per pid file (real servers): a second one started on what a
running server holds is refused at start with one line and changes nothing of the first's;
what a killed server left behind is taken over; a file at fifo.path is never deleted."""

from __future__ import annotations

import os
import signal
import stat
import subprocess

from tests.serverproc import Server, alive, children_of, free_port, wait_for


def _second(short_tmp, **kwargs) -> Server:
    """A server with its own directory, configuration and arena (so only what the test
    points at the first's is shared)."""
    d = short_tmp / f"second{len(list(short_tmp.glob('second*')))}"
    d.mkdir()
    return Server(d, free_port(), **kwargs)


def _refused(server: Server) -> str:
    """Run the server, expect exit 1 with one ERROR line and no traceback: that line."""
    proc = server.launch()
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError("the second server started") from None
    err = server.stderr()
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if " ERROR: " in line]
    assert len(lines) == 1, err
    return lines[0]


def _kill_9(server: Server) -> None:
    """kill -9 of the supervisor; its children stop on their own (parent-death signal)."""
    pid = server.proc.pid
    children = children_of(pid)
    os.kill(pid, signal.SIGKILL)
    server.proc.wait(20)
    wait_for(lambda: not any(alive(c) for c in children), 20, "the dead server's children")


def test_a_second_server_on_a_served_fifo_is_refused(servers, short_tmp):
    first = servers().start()
    first.add("q1", "k", "v")
    fifo = first.fifo_path
    ino = os.lstat(fifo).st_ino
    second = _second(short_tmp, pid_file=False)
    second.config["fifo"]["path"] = str(fifo)
    try:
        line = _refused(second)
    finally:
        second.kill()
    assert line.endswith(f"fifo.path {fifo} is served by a running server (pid "
                         f"{first.proc.pid}): is this server started twice?"), line
    assert os.lstat(fifo).st_ino == ino  # not removed, not replaced
    # the first keeps answering on it, with its own queue
    assert first.fifo_mi("mq_get_size", {"name": "q1"}) == {"Queue": {"name": "q1", "size": 1}}
    assert first.stop() == 0
    assert not os.path.lexists(fifo)


def test_the_fifo_of_a_killed_server_is_taken_over(servers, short_tmp):
    first = servers().start()
    _kill_9(first)
    assert stat.S_ISFIFO(os.lstat(first.fifo_path).st_mode)  # left behind
    second = _second(short_tmp, pid_file=False)
    second.config["fifo"]["path"] = str(first.fifo_path)
    try:
        second.fifo_path = first.fifo_path
        second.start()
        second.add("q1", "k", "v")
        assert second.fifo_mi("mq_get_size", {"name": "q1"}) == {"Queue": {"name": "q1",
                                                                           "size": 1}}
        assert second.stop() == 0
    finally:
        second.kill()
    assert not os.path.lexists(first.fifo_path)


def test_a_regular_file_at_fifo_path_is_refused_not_deleted(servers):
    s = servers()
    s.fifo_path.write_text("an operator's notes\n")
    line = _refused(s)
    assert line.endswith(f"fifo.path {s.fifo_path} is a regular file, not a FIFO; not "
                         "replacing it (remove it or set another fifo.path)"), line
    assert s.fifo_path.read_text() == "an operator's notes\n"
    assert not s.pid_file.exists()


def test_a_symlink_at_fifo_path_is_refused_and_not_followed(servers, short_tmp):
    s = servers()
    target = short_tmp / "target"
    target.write_text("keep\n")
    os.symlink(target, s.fifo_path)
    line = _refused(s)
    assert f"fifo.path {s.fifo_path} is a symbolic link, not a FIFO" in line, line
    assert os.readlink(s.fifo_path) == str(target) and target.read_text() == "keep\n"


def test_a_second_server_with_the_same_pid_file_is_refused(servers, short_tmp):
    first = servers().start()
    second = _second(short_tmp)
    second.config["pid_file"] = str(first.pid_file)
    try:
        line = _refused(second)
    finally:
        second.kill()
    assert line.endswith(f"pid file {first.pid_file} is held by a running server (pid "
                         f"{first.proc.pid}): is this server started twice?"), line
    # refused before anything else: its FIFO never made, the first's pid file untouched
    assert not os.path.lexists(second.fifo_path)
    assert first.pid_file.read_text() == f"{first.proc.pid}\n"
    assert first.mi("mq_get_size", {"name": "q1"}) == {"Queue": {"name": "q1", "size": 0}}
    assert first.stop() == 0
    assert not first.pid_file.exists()


def test_the_pid_file_of_a_killed_server_is_taken_over(servers, short_tmp):
    first = servers().start()
    _kill_9(first)
    assert first.pid_file.read_text() == f"{first.proc.pid}\n"  # left behind
    second = _second(short_tmp)
    second.config["pid_file"] = str(first.pid_file)
    try:
        second.pid_file = first.pid_file
        second.start()
        assert first.pid_file.read_text() == f"{second.proc.pid}\n"
        assert second.stop() == 0
    finally:
        second.kill()
    assert not first.pid_file.exists()


# ---- another local user who can write the FIFO's directory ------------------------------

from tests.attacker import attacker, shared_tmp  # noqa: E402, F401 - fixtures


def test_a_symlink_race_on_the_fifo_re_creation_changes_no_file(servers, short_tmp,
                                                                attacker):  # noqa: F811
    """fifo.path in a directory another user owns: for 3.5 s that user renames symbolic
    links to a root file over the path as fast as it can (each of the listener's checks
    then finds the path replaced and re-creates the FIFO).  The root file keeps its mode,
    owner and content: the FIFO's mode is applied to a descriptor opened without following
    links, never by path.  Once the links are gone the FIFO is served again."""
    victim = short_tmp / "victim"
    victim.write_text("root's data\n")
    os.chmod(victim, 0o600)
    os.chmod(short_tmp, 0o711)  # the attacker may reach the victim by path
    room = short_tmp / "atk"
    room.mkdir()
    os.chown(room, attacker.uid, attacker.gid)
    s = servers(pid_file=False)
    s.fifo_path = room / "fifo"
    s.config["fifo"]["path"] = str(s.fifo_path)
    s.config["fifo"]["mode"] = 0o666
    s.start()
    path, tmp = str(s.fifo_path), str(room / "link")
    attacker.python(
        "import os, time\n"
        "end = time.monotonic() + 3.5\n"
        "while time.monotonic() < end:\n"
        f"    os.symlink({str(victim)!r}, {tmp!r})\n"
        f"    os.rename({tmp!r}, {path!r})\n"
        f"os.unlink({path!r})\n")
    st = os.stat(victim)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0), oct(st.st_mode)
    assert victim.read_text() == "root's data\n"
    assert s.fifo_mi("mq_get_size", {"name": "q1"}) == {"Queue": {"name": "q1", "size": 0}}
    assert stat.S_ISFIFO(os.lstat(path).st_mode) and os.lstat(path).st_uid == 0
    err = s.stderr()
    assert err.count("is a symbolic link, not a FIFO") == 1, err  # said once, not each try
    assert s.stop() == 0


def test_while_the_fifo_listener_restarts_the_fifo_stays_claimed(servers, short_tmp):
    """The supervisor holds the FIFO (and its lock) while its listener is dead: a request
    written to a listener that then dies waits in the pipe and is answered by the restarted
    listener, and a second server is still refused."""
    from concurrent.futures import ThreadPoolExecutor

    s = servers().start()
    s.add("q1", "k", "v")
    listener = s.pids_by_type()["MI FIFO"]
    os.kill(listener, signal.SIGSTOP)  # reads nothing more
    wait_for(lambda: _state(listener) == "T", 10, "the listener to stop")
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(s.fifo_mi, "mq_get_size", {"name": "q1"}, 20)
        wait_for(lambda: _pipe_holds_bytes(s.fifo_path), 10, "the request in the pipe")
        os.kill(listener, signal.SIGKILL)
        assert reply.result(20) == {"Queue": {"name": "q1", "size": 1}}
    wait_for(lambda: s.pids_by_type().get("MI FIFO") not in (None, listener), 10,
             "the restarted listener in ps")
    second = _second(short_tmp, pid_file=False)
    second.config["fifo"]["path"] = str(s.fifo_path)
    try:
        line = _refused(second)
    finally:
        second.kill()
    assert f"fifo.path {s.fifo_path} is served by a running server (pid {s.proc.pid})" in line
    assert s.stop() == 0


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _pipe_holds_bytes(path) -> bool:
    import fcntl
    import termios

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little") > 0
    finally:
        os.close(fd)
