"""create_fifo / remove_fifo: replace what is there, refuse a directory, exact mode."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from mi_fifo.listener import FifoError, create_fifo, remove_fifo
from mi_server.config import FifoConfig


def cfg(path, **kw) -> FifoConfig:
    return FifoConfig(path=path, reply_dir=path.parent, **kw)


@pytest.mark.parametrize("existing", ["nothing", "file", "fifo", "socket", "symlink"])
def test_create_replaces_whatever_is_at_the_path(short_tmp, existing):
    path = short_tmp / "f"
    if existing == "file":
        path.write_text("x")
    elif existing == "fifo":
        os.mkfifo(path)
    elif existing == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif existing == "symlink":
        (short_tmp / "target").write_text("keep me")
        path.symlink_to(short_tmp / "target")
    create_fifo(cfg(path))
    st = os.lstat(path)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    if existing == "symlink":
        assert (short_tmp / "target").read_text() == "keep me"


def test_mode_ignores_the_umask(short_tmp):
    old = os.umask(0o077)
    try:
        create_fifo(cfg(short_tmp / "f", mode=0o666))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(short_tmp / "f").st_mode) == 0o666


def test_a_directory_is_not_replaced(short_tmp):
    (short_tmp / "d").mkdir()
    with pytest.raises(FifoError, match="is a directory"):
        create_fifo(cfg(short_tmp / "d"))
    assert (short_tmp / "d").is_dir()


def test_missing_directory_is_a_clear_error(short_tmp):
    with pytest.raises(FifoError, match="does not exist"):
        create_fifo(cfg(short_tmp / "no" / "f"))


def test_unknown_user_is_a_clear_error(short_tmp):
    with pytest.raises(FifoError, match="no such user or group"):
        create_fifo(cfg(short_tmp / "f", user="no_such_user_mq"))


def test_chown_by_number(short_tmp):
    create_fifo(cfg(short_tmp / "f", user=str(os.getuid()), group=str(os.getgid())))
    st = os.stat(short_tmp / "f")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_remove_only_removes_a_fifo(short_tmp):
    path = short_tmp / "f"
    create_fifo(cfg(path))
    remove_fifo(cfg(path))
    assert not path.exists()
    path.write_text("someone else's")
    remove_fifo(cfg(path))
    assert path.read_text() == "someone else's"
    remove_fifo(cfg(short_tmp / "none"))  # nothing there: fine
