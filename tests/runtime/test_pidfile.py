"""The pid file: written through a temporary file nobody can plant, locked for the server's
life; a held one refuses a second claim, a dead server's one is replaced, and only our own
file is removed."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from mi_server.runtime.pidfile import PidFileError, PidFileInUse, claim_pid_file
from tests.attacker import attacker, shared_tmp  # noqa: F401 - fixtures


def test_holds_our_pid_and_is_removed(short_tmp):
    path = short_tmp / "x.pid"
    claim = claim_pid_file(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(short_tmp)) == ["x.pid"]  # no temporary left behind
    claim.release()
    assert not path.exists()


def _hold(path, ready, done) -> None:
    claim_pid_file(path)
    ready.set()
    done.wait(20)


def test_a_running_holder_refuses_the_claim_and_keeps_its_file(short_tmp):
    path = short_tmp / "x.pid"
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(path, ready, done))
    holder.start()
    try:
        assert ready.wait(20)
        with pytest.raises(PidFileInUse, match=rf"pid file {path} is held by a running "
                                               rf"server \(pid {holder.pid}\)"):
            claim_pid_file(path)
        assert path.read_text() == f"{holder.pid}\n"
        assert sorted(os.listdir(short_tmp)) == ["x.pid"]
    finally:
        done.set()
        holder.join(20)
    # the holder died without removing its file: its lock went with it
    claim = claim_pid_file(path)
    assert path.read_text() == f"{os.getpid()}\n"
    claim.release()


def test_a_file_replaced_meanwhile_is_not_removed(short_tmp):
    path = short_tmp / "x.pid"
    claim = claim_pid_file(path)
    os.unlink(path)
    path.write_text("4242\n")  # another instance's (an operator's rm and restart)
    claim.release()
    assert path.read_text() == "4242\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_something_else_at_the_path_is_refused(short_tmp, kind):
    path = short_tmp / "x.pid"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    with pytest.raises(PidFileError, match="not a regular file; not replacing it"):
        claim_pid_file(path)
    assert sorted(os.listdir(short_tmp)) == ["x.pid"]


def test_a_planted_temporary_symlink_is_not_written_through(short_tmp, attacker,  # noqa: F811
                                                           shared_tmp):  # noqa: F811
    """The attacker, who can write the pid file's directory, plants symbolic links to a
    root file under the temporary names the server would use (`.x.pid.<pid>.tmp` and any
    other): the root file is neither truncated nor written."""
    victim = short_tmp / "victim"
    victim.write_text("root's data\n")
    os.chmod(short_tmp, 0o711)
    room = os.path.join(shared_tmp, "run")
    attacker.python(f"import os; os.mkdir({room!r}, 0o777); os.chmod({room!r}, 0o777)\n"
                    f"for name in ('.x.pid.{os.getpid()}.tmp', '.x.pid.tmp', 'x.pid.tmp'):\n"
                    f"    os.symlink({str(victim)!r}, os.path.join({room!r}, name))")
    path = os.path.join(room, "x.pid")
    claim = claim_pid_file(path)
    try:
        assert victim.read_text() == "root's data\n"
        with open(path) as f:
            assert f.read() == f"{os.getpid()}\n"
        assert not os.path.islink(path)
    finally:
        claim.release()
