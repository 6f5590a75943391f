"""Bind the datagram socket (in the supervisor, before any fork) and remove it at stop.

UDP is a plain bind.  An AF_UNIX socket is a file, made with care, since the directory it
lives in may be shared (/tmp, /run):
- the directory is opened once and everything after happens relative to that descriptor
  (bind goes through /proc/self/fd/N/<name>), so a directory renamed or swapped for a
  symlink meanwhile cannot send the socket, its chown or its removal elsewhere; bind never
  follows a symlink at the name itself (it fails with EADDRINUSE instead);
- a directory everyone may write without the sticky bit is refused: anyone could replace
  the socket under the clients' feet;
- something already at the path is replaced only if it is a socket nobody answers on (a
  server that died); anything else, or a live socket, is a start-up error;
- the mode is applied by the umask at bind, so the file never exists with wider
  permissions, even for an instant (fchmod on a socket does not reach its file);
  user/group by fchownat without following symlinks, on the file just checked to be a
  socket;
- at stop only the very file bound (same device and inode) is removed.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from typing import Any

from mi_server.datagram.address import UNIX_PATH_MAX, DatagramAddress

# The kernel's default socket buffers (~208 KiB) hold a few full-size datagrams; a burst of
# requests from many clients gets more room than that before the kernel drops any.
RECV_BUFFER = 4 * 1024 * 1024


class DatagramError(Exception):
    """The socket cannot be made; the message names the socket and the reason."""


@dataclass
class BoundSocket:
    """The bound socket and, for AF_UNIX, the identity of the file that bind made."""

    sock: socket.socket
    address: DatagramAddress
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the unix socket file

    def close(self) -> None:
        self.sock.close()


def bind_socket(address: DatagramAddress, mode: int = 0o660, user: str | None = None,
                group: str | None = None) -> BoundSocket:
    if address.is_unix:
        return _bind_unix(address, mode, user, group)
    sock = socket.socket(address.family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        _grow_receive_buffer(sock)
        sock.bind(address.sockaddr)
    except OSError as exc:
        sock.close()
        raise DatagramError(f"datagram.socket {address}: cannot bind: "
                            f"{exc.strerror or exc}") from None
    return BoundSocket(sock, address)


def remove_socket(bound: BoundSocket) -> None:
    """Unlink the unix socket file we bound, if it is still ours; nothing for UDP."""
    if not bound.address.is_unix or bound.ident is None:
        return
    parent, name = os.path.split(bound.address.path)
    try:
        dfd = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == bound.ident:
            os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dfd)


def _owner(user: str | None, group: str | None) -> tuple[int, int]:
    uid = gid = -1
    if user:
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            raise DatagramError(f"datagram.user: no such user {user!r}") from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise DatagramError(f"datagram.group: no such group {group!r}") from None
    return uid, gid


def _bind_unix(address: DatagramAddress, mode: int, user: str | None,
               group: str | None) -> BoundSocket:
    path = address.path
    parent, name = os.path.split(path)
    uid, gid = _owner(user, group)
    try:
        dfd = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DatagramError(f"datagram.socket {path}: directory {parent}: "
                            f"{exc.strerror or exc}") from None
    try:
        dst = os.fstat(dfd)
        if dst.st_mode & stat.S_IWOTH and not dst.st_mode & stat.S_ISVTX:
            raise DatagramError(f"datagram.socket {path}: the directory {parent} is writable "
                                "by everyone without the sticky bit: anyone could replace "
                                "the socket (use a directory of the service's own)")
        via = f"/proc/self/fd/{dfd}/{name}"
        if len(via.encode()) > UNIX_PATH_MAX:
            raise DatagramError(f"datagram.socket {path}: the file name is too long for a "
                                "unix socket")
        _clear_stale(dfd, name, via, path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            _grow_receive_buffer(sock)
            old = os.umask(0o777 & ~mode)  # single-threaded here: nobody else sees it
            try:
                sock.bind(via)
            finally:
                os.umask(old)
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISSOCK(st.st_mode) or st.st_nlink != 1:
                raise DatagramError(f"datagram.socket {path}: replaced right after bind; "
                                    "refusing it")
            if uid != -1 or gid != -1:
                os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
            raise DatagramError(f"datagram.socket {path}: cannot bind: "
                                f"{exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        return BoundSocket(sock, address, (st.st_dev, st.st_ino))
    finally:
        os.close(dfd)


def _clear_stale(dfd: int, name: str, via: str, path: str) -> None:
    """Remove what is at `name` if it is a socket nobody answers on; else refuse."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DatagramError(f"datagram.socket {path}: what is there "
                            "is not a socket; not replacing it")
    if _answers(via):
        raise DatagramError(f"datagram.socket {path}: another process is bound to it "
                            "(a server running with the same socket?)")
    os.unlink(name, dir_fd=dfd)


def _answers(via: str) -> bool:
    """Whether a process is bound to the socket file (connect is refused when none is)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        probe = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
        try:
            probe.connect(via)
            return True
        except OSError as exc:
            if exc.errno == errno.EPROTOTYPE:  # a socket of the other kind: try it
                continue
            if exc.errno == errno.ECONNREFUSED:
                return False
            return True  # cannot tell (e.g. EACCES): do not remove it
        finally:
            probe.close()
    return False


def _grow_receive_buffer(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
