"""The `datagram:` section (CONFIG.md): defaults, each key validated with one clear line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mi_server.config import ConfigError, load_config
from tests.config.test_check_machine import check


def load(tmp_path: Path, text: str):
    path = tmp_path / "mq.yaml"
    path.write_text(text)
    return load_config(path)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "mq.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [line.split(": ", 1)[1] for line in info.value.problems]


def test_omitted_or_disabled_means_no_datagram_transport(tmp_path):
    assert load(tmp_path, "fifo: {}\n").datagram is None
    assert load(tmp_path, "datagram: {enabled: false}\n").datagram is None


def test_defaults_are_opensips_mi_datagram_s(tmp_path):
    d = load(tmp_path, "datagram: {}\n").datagram
    assert str(d.socket) == "udp:127.0.0.1:8080"
    assert (d.mode, d.user, d.group, d.buffer_size) == (0o660, None, None, 65457)


def test_every_key_is_read(tmp_path):
    d = load(tmp_path, 'datagram: {socket: /run/mq/mi.sock, mode: "0600", user: mqueue, '
                       'group: 123, buffer_size: 16K}\n').datagram
    assert d.socket.family == socket.AF_UNIX and d.socket.path == "/run/mq/mi.sock"
    assert (d.mode, d.user, d.group, d.buffer_size) == (0o600, "mqueue", "123", 16384)
    d = load(tmp_path, 'datagram: {socket: "udp:[::1]:9999"}\n').datagram
    assert (d.socket.family, d.socket.host, d.socket.port) == (socket.AF_INET6, "::1", 9999)


@pytest.mark.parametrize("text, line", [
    ("datagram: {socket: 'tcp:1.2.3.4:5'}",
     "datagram.socket: bad socket 'tcp:1.2.3.4:5' (udp:IP:PORT, e.g. udp:127.0.0.1:8080 "
     "or udp:[::1]:8080, or an absolute path for a unix socket)"),
    ("datagram: {socket: 'udp:mi.example.org:8080'}",
     "datagram.socket: bad socket 'udp:mi.example.org:8080': 'mi.example.org' is not an IP "
     "address (IPv4, or IPv6 in brackets)"),
    ("datagram: {socket: /s.sock, mode: '999'}",
     "datagram.mode: bad mode '999' (an octal string such as \"0660\")"),
    ("datagram: {socket: /s.sock, user: [a]}",
     "datagram.user: must be a name or a number, not ['a']"),
    ("datagram: {socket: 'udp:127.0.0.1:8080', mode: '0600'}",
     "datagram.mode: applies to a unix socket only, not to udp:127.0.0.1:8080"),
    ("datagram: {buffer_size: 100}",
     "datagram.buffer_size: must be at least 256 bytes, not 100"),
    ("datagram: {buffer_size: 65508}",
     "datagram.buffer_size: 65508 bytes is more than one datagram holds over UDP "
     "(at most 65507)"),
    ("datagram: {buffer_size: lots}",
     "datagram.buffer_size: not a size: 'lots' (a number with an optional K, M or G suffix)"),
    ("datagram: {port: 8080}",
     "datagram.port: unknown key (expected one of: enabled, socket, mode, user, group, "
     "buffer_size)"),
    ("datagram: udp:127.0.0.1:8080", "datagram: must be a mapping, not a string"),
])
def test_each_mistake_is_one_clear_line(tmp_path, text, line):
    assert problems_of(tmp_path, text + "\n") == [line]


def test_check_reports_a_missing_socket_directory(tmp_path):
    code, lines = check(tmp_path, {"datagram": {"socket": str(tmp_path / "gone" / "s")}})
    assert code == 1
    assert lines == [f"datagram.socket: the directory {tmp_path / 'gone'} does not exist"]


def test_check_reports_a_directory_anyone_may_replace_the_socket_in(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    code, lines = check(tmp_path, {"datagram": {"socket": str(open_dir / "s")}})
    assert code == 1
    assert lines == [f"datagram.socket: the directory {open_dir} is writable by everyone "
                     "without the sticky bit (anyone could replace the socket)"]


def test_datagram_alone_is_a_transport(tmp_path):
    code, lines = check(tmp_path, {"datagram": {"socket": str(tmp_path / "s")}})
    assert (code, lines) == (0, [])
