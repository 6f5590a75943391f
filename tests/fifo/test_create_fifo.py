"""claim_fifo / remove_fifo: a fresh FIFO, locked, exact mode; a FIFO nobody serves is
replaced, a served one or anything that is not a FIFO is refused and left alone."""

from __future__ import annotations

import fcntl
import os
import socket
import stat

import pytest

from mi_fifo.fifofile import FifoError, FifoInUse, claim_fifo, remove_fifo
from mi_server.config import FifoConfig


def cfg(path, **kw) -> FifoConfig:
    return FifoConfig(path=path, reply_dir=path.parent, **kw)


def test_a_fresh_fifo_locked_with_its_mode(short_tmp):
    path = short_tmp / "f"
    fd = claim_fifo(cfg(path))
    try:
        st = os.lstat(path)
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        other = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        with pytest.raises(BlockingIOError):  # the lock a second server would need
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    finally:
        os.close(fd)


def test_a_fifo_nobody_serves_is_replaced(short_tmp):
    path = short_tmp / "f"
    os.mkfifo(path, 0o644)
    stale = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # open, unlocked: keeps its inode
    try:
        fd = claim_fifo(cfg(path))
        os.close(fd)
        st = os.lstat(path)
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_ino != os.fstat(stale).st_ino
    finally:
        os.close(stale)


def test_a_served_fifo_is_refused_and_left_alone(short_tmp):
    path = short_tmp / "f"
    first = claim_fifo(cfg(path))
    try:
        ino = os.lstat(path).st_ino
        with pytest.raises(FifoInUse, match=rf"fifo.path {path} is served by a running "
                                            rf"server \(pid {os.getpid()}\)"):
            claim_fifo(cfg(path))
        assert os.lstat(path).st_ino == ino
    finally:
        os.close(first)
    os.close(claim_fifo(cfg(path)))  # its lock went with its descriptor: stale now


@pytest.mark.parametrize("existing, kind", [("file", "a regular file"),
                                            ("socket", "a socket"),
                                            ("symlink", "a symbolic link")])
def test_anything_but_a_fifo_is_refused_not_deleted(short_tmp, existing, kind):
    path = short_tmp / "f"
    target = short_tmp / "target"
    if existing == "file":
        path.write_text("keep me")
    elif existing == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    else:
        os.mkfifo(target)  # even a link to a FIFO: nothing is followed
        path.symlink_to(target)
    with pytest.raises(FifoError, match=f"fifo.path {path} is {kind}, not a FIFO; not "
                                        "replacing it"):
        claim_fifo(cfg(path))
    assert os.path.lexists(path)
    if existing == "file":
        assert path.read_text() == "keep me"
    if existing == "symlink":
        assert os.readlink(path) == str(target)


def test_mode_ignores_the_umask(short_tmp):
    old = os.umask(0o077)
    try:
        os.close(claim_fifo(cfg(short_tmp / "f", mode=0o666)))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(short_tmp / "f").st_mode) == 0o666


def test_a_directory_is_not_replaced(short_tmp):
    (short_tmp / "d").mkdir()
    with pytest.raises(FifoError, match="is a directory"):
        claim_fifo(cfg(short_tmp / "d"))
    assert (short_tmp / "d").is_dir()


def test_missing_directory_is_a_clear_error(short_tmp):
    with pytest.raises(FifoError, match="does not exist"):
        claim_fifo(cfg(short_tmp / "no" / "f"))
    assert not (short_tmp / "no").exists()


def test_unknown_user_is_a_clear_error(short_tmp):
    with pytest.raises(FifoError, match="no such user or group"):
        claim_fifo(cfg(short_tmp / "f", user="no_such_user_mq"))


def test_chown_by_number(short_tmp):
    os.close(claim_fifo(cfg(short_tmp / "f", user=str(os.getuid()), group=str(os.getgid()))))
    st = os.stat(short_tmp / "f")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_remove_removes_only_our_fifo(short_tmp):
    path = short_tmp / "f"
    remove_fifo(cfg(path), claim_fifo(cfg(path)))
    assert not os.path.lexists(path)
    # replaced by someone's file meanwhile: the file stays
    fd = claim_fifo(cfg(path))
    os.unlink(path)
    path.write_text("someone else's")
    remove_fifo(cfg(path), fd)
    assert path.read_text() == "someone else's"
    # replaced by another server's FIFO meanwhile: that one stays, served
    fd = claim_fifo(cfg(short_tmp / "g"))
    os.unlink(short_tmp / "g")
    other = claim_fifo(cfg(short_tmp / "g"))
    remove_fifo(cfg(short_tmp / "g"), fd)
    assert stat.S_ISFIFO(os.lstat(short_tmp / "g").st_mode)
    os.close(other)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by remove_fifo: its lock is gone


# ---- another local user who can write the FIFO's directory ------------------------------

from tests.attacker import attacker, shared_tmp  # noqa: E402, F401 - fixtures


def _swap_code(path, victim) -> str:
    """The attacker's move: a symbolic link to `victim` renamed over `path` (atomic)."""
    tmp = f"{path}.atk"
    return (f"import os\nos.symlink({str(victim)!r}, {tmp!r})\n"
            f"os.rename({tmp!r}, {str(path)!r})\n")


def test_a_symlink_swapped_in_after_mkfifo_is_not_followed(short_tmp, attacker,  # noqa: F811
                                                          monkeypatch):
    """The attacker owns the FIFO's directory and wins the race: right after mkfifo it
    replaces the new FIFO with a symbolic link to a root file.  Mode and owner are applied
    to the descriptor opened without following links, so the root file keeps its mode and
    owner (by path, chmod/chown would make it the FIFO's 0666 and the attacker's)."""
    victim = short_tmp / "victim"
    victim.write_text("root's\n")
    os.chmod(victim, 0o600)
    os.chmod(short_tmp, 0o711)  # the attacker may reach the victim by path
    room = short_tmp / "atk"
    room.mkdir()
    os.chown(room, attacker.uid, attacker.gid)
    path = room / "fifo"
    real_mkfifo = os.mkfifo

    def mkfifo_then_swap(p, mode=0o666, *a, **kw):
        real_mkfifo(p, mode, *a, **kw)
        if os.fspath(p) == str(path):
            attacker.python(_swap_code(path, victim))

    monkeypatch.setattr(os, "mkfifo", mkfifo_then_swap)
    with pytest.raises(FifoError, match="is a symbolic link, not a FIFO"):
        claim_fifo(cfg(path, mode=0o666, user=str(attacker.uid)))
    st = os.stat(victim)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0), oct(st.st_mode)
    assert victim.read_text() == "root's\n"


def test_another_user_s_fifo_swapped_in_is_not_taken(short_tmp, attacker,  # noqa: F811
                                                    monkeypatch):
    """Swapped for a FIFO of the attacker's own (which it could read requests from): the
    descriptor's owner is checked, so it is neither served nor given our mode."""
    os.chmod(short_tmp, 0o711)
    room = short_tmp / "atk"
    room.mkdir()
    os.chown(room, attacker.uid, attacker.gid)
    path = room / "fifo"
    real_mkfifo = os.mkfifo
    swaps = []

    def mkfifo_then_swap(p, mode=0o666, *a, **kw):
        real_mkfifo(p, mode, *a, **kw)
        if os.fspath(p) == str(path) and not swaps:
            swaps.append(1)
            attacker.python(f"import os\nos.mkfifo({str(path) + '.atk'!r}, 0o600)\n"
                            f"os.rename({str(path) + '.atk'!r}, {str(path)!r})")

    monkeypatch.setattr(os, "mkfifo", mkfifo_then_swap)
    # the attacker's FIFO is then one nobody serves: replaced by a fresh one of ours
    fd = claim_fifo(cfg(path))
    try:
        st = os.fstat(fd)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o660)
        assert (st.st_dev, st.st_ino) == (os.lstat(path).st_dev, os.lstat(path).st_ino)
    finally:
        os.close(fd)
    assert swaps
