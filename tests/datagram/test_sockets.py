"""Binding the AF_UNIX datagram socket safely (mi_server.datagram.sockets), on real files."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from mi_server.datagram.address import BadAddress, parse_address
from mi_server.datagram.sockets import DatagramError, bind_socket, remove_socket
from tests.attacker import attacker, shared_tmp  # noqa: F401  (fixtures)


def unix(path) -> object:
    return parse_address(str(path))


def test_mode_is_exact_whatever_the_umask(short_tmp):
    old = os.umask(0o077)
    try:
        bound = bind_socket(unix(short_tmp / "a.sock"), mode=0o666)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.lstat(short_tmp / "a.sock").st_mode) == 0o666
        assert os.umask(old) == old  # the umask is given back
    finally:
        bound.close()


def test_the_file_never_exists_with_wider_permissions(short_tmp):
    """The mode comes from the umask at bind, not from a chmod after it."""
    bound = bind_socket(unix(short_tmp / "b.sock"), mode=0o600)
    try:
        assert stat.S_IMODE(os.lstat(short_tmp / "b.sock").st_mode) == 0o600
    finally:
        bound.close()


def test_owner_by_number(short_tmp):
    bound = bind_socket(unix(short_tmp / "c.sock"), user="12345", group="23456")
    try:
        st = os.lstat(short_tmp / "c.sock")
        assert (st.st_uid, st.st_gid) == (12345, 23456)
    finally:
        bound.close()


def test_unknown_user_is_a_clear_error(short_tmp):
    with pytest.raises(DatagramError, match="datagram.user: no such user 'nosuchuser-mq'"):
        bind_socket(unix(short_tmp / "d.sock"), user="nosuchuser-mq")


def test_a_stale_socket_is_replaced(short_tmp):
    path = short_tmp / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nobody is bound
    bound = bind_socket(unix(path))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
            c.sendto(b"x", str(path))
        assert bound.sock.recv(10) == b"x"
    finally:
        bound.close()


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_a_live_socket_is_not_replaced(short_tmp, kind):
    path = short_tmp / "live.sock"
    live = socket.socket(socket.AF_UNIX, kind)
    live.bind(str(path))
    if kind == socket.SOCK_STREAM:
        live.listen()
    try:
        with pytest.raises(DatagramError, match="another process is bound to it"):
            bind_socket(unix(path))
        assert path.is_socket()
    finally:
        live.close()


@pytest.mark.parametrize("what", ["file", "symlink", "dangling-symlink", "directory"])
def test_anything_but_a_socket_is_left_alone(short_tmp, what):
    path = short_tmp / "x.sock"
    target = short_tmp / "target"
    if what == "file":
        path.write_text("data")
    elif what == "symlink":
        target.write_text("victim")
        path.symlink_to(target)
    elif what == "dangling-symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    with pytest.raises(DatagramError, match="is not a socket; not replacing it"):
        bind_socket(unix(path))
    assert os.path.lexists(path)
    assert not target.exists() or target.read_text() == "victim"


def test_a_world_writable_directory_without_sticky_bit_is_refused(short_tmp):
    d = short_tmp / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(DatagramError, match="writable by everyone without the sticky bit"):
        bind_socket(unix(d / "s.sock"))
    d.chmod(0o1777)  # like /tmp: others cannot remove or replace our file
    bind_socket(unix(d / "s.sock")).close()


def test_missing_directory_is_a_clear_error(short_tmp):
    with pytest.raises(DatagramError, match="No such file or directory"):
        bind_socket(unix(short_tmp / "nodir" / "s.sock"))


def test_remove_only_removes_the_socket_we_bound(short_tmp):
    path = short_tmp / "r.sock"
    bound = bind_socket(unix(path))
    bound.close()
    path.unlink()
    path.write_text("someone else's")  # replaced meanwhile
    remove_socket(bound)
    assert path.read_text() == "someone else's"
    path.unlink()
    bound = bind_socket(unix(path))
    bound.close()
    remove_socket(bound)
    assert not os.path.lexists(path)


def test_an_unprivileged_user_cannot_send_to_a_0660_root_socket(attacker, shared_tmp):  # noqa: F811
    path = os.path.join(shared_tmp, "mi.sock")
    bound = bind_socket(unix(path), mode=0o660)
    try:
        run = attacker.python(
            "import socket\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "try:\n"
            f"    s.sendto(b'{{}}', {path!r}); print('sent')\n"
            "except PermissionError: print('refused')\n")
        assert run.stdout.strip() == "refused"
        # and cannot take the name away in a sticky shared directory
        run = attacker.run("rm", "-f", path, check=False)
        assert os.path.lexists(path), run.stderr
    finally:
        bound.close()


@pytest.mark.parametrize("text, expect", [
    ("udp:127.0.0.1:8080", "udp:127.0.0.1:8080"),
    ("udp:[::1]:9", "udp:[::1]:9"),
    ("udp:::1:9", "udp:[::1]:9"),
    ("UDP:0.0.0.0:1", "udp:0.0.0.0:1"),
    ("/run/mi.sock", "/run/mi.sock"),
])
def test_addresses_parse(text, expect):
    assert str(parse_address(text)) == expect


@pytest.mark.parametrize("text", ["", "udp:1.2.3.4", "udp:1.2.3.4:0", "udp:1.2.3.4:65536",
                                  "tcp:1.2.3.4:5", "udp:example.org:5", "relative.sock",
                                  "/" + "a" * 107, "/run/", 8080, None])
def test_bad_addresses_are_refused(text):
    with pytest.raises(BadAddress):
        parse_address(text)
