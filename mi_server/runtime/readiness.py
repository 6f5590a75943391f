"""When the server serves: every transport has answered a real request.

The supervisor binds the HTTP socket and creates the FIFO before it forks anyone, so a
client's connect or write would already succeed while no worker is there to answer. What
systemd's `READY=1` promises is more: that a client gets its reply. So after the children
are started, the supervisor sends each transport one request of its own and waits for the
answer, without ever blocking its loop (each probe is a small non-blocking state machine
stepped on every pass):

- HTTP: `GET /<root>` over HTTP/1.0 to the listening address (loopback for a wildcard);
  any status line is an answer (405, or 401 where `http.auth` is set).
- FIFO: `version` with a reply FIFO of its own in `fifo.reply_dir`, removed afterwards;
  where the service may not create files there, the listener having the FIFO open.
- datagram: `version` in one datagram, from a socket of its own (UDP: an ephemeral port
  on loopback for a wildcard address; unix: an abstract address, so no file is left).

Nothing of this runs unless systemd asked for notifications (NOTIFY_SOCKET), so a server
started by hand or by a test serves no request it was not sent.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

from mi_server.runtime.sdnotify import Notifier

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # seconds between two steps of the probes while not ready


class HttpProbe:
    """One HTTP request to the listening socket; done once a status line comes back."""

    name = "HTTP"

    def __init__(self, listening: socket.socket, root: str) -> None:
        host, port = listening.getsockname()[:2]
        if ipaddress.ip_address(host).is_unspecified:
            host = "::1" if listening.family == socket.AF_INET6 else "127.0.0.1"
        self.address = (host, port)
        self.family = listening.family
        self.request = f"GET /{root} HTTP/1.0\r\n\r\n".encode()
        self.sock: socket.socket | None = None
        self.done = False

    def step(self) -> bool:
        if self.done:
            return True
        try:
            if self.sock is None:
                self.sock = socket.socket(self.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                self.sock.settimeout(1.0)  # loopback: connect and send never wait long
                self.sock.connect(self.address)
                self.sock.sendall(self.request)
                self.sock.setblocking(False)
            if not select.select([self.sock], [], [], 0)[0]:
                return False
            self.done = self.sock.recv(16).startswith(b"HTTP/")
        except OSError:
            self.done = False
        self.close()  # answered, or failed: the next step starts a fresh connection
        return self.done

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class FifoProbe:
    """One `version` request through the FIFO; done once its reply arrives."""

    name = "FIFO"

    def __init__(self, fifo_path: Path, reply_dir: Path) -> None:
        self.fifo_path = os.fspath(fifo_path)
        self.reply_name = f"mqueue_mi_ready_{os.getpid()}"  # no '.', '/': a valid name
        self.reply_path = os.path.join(os.fspath(reply_dir), self.reply_name)
        self.reply_fd: int | None = None
        self.sent = False
        self.listener_only = False  # True where no reply FIFO can be made in reply_dir
        self.done = False

    def step(self) -> bool:
        if self.done:
            return True
        try:
            if self.reply_fd is None and not self.listener_only:
                try:
                    self._make_reply_fifo()
                except OSError as exc:
                    # e.g. a reply_dir read-only for the service (ProtectSystem=strict
                    # with /tmp): the listener holding the FIFO open is what can be seen.
                    log.info("FIFO readiness: no reply FIFO in %s (%s); waiting for the "
                             "listener to open the FIFO instead",
                             os.path.dirname(self.reply_path), exc.strerror or exc)
                    self.listener_only = True
            if self.listener_only:
                self.done = self._listener_has_it_open()
                return self.done
            if not self.sent:
                self.sent = self._send()
                return False
            if select.select([self.reply_fd], [], [], 0)[0] and os.read(self.reply_fd, 64):
                self.done = True
                self.close()
        except OSError as exc:
            log.debug("FIFO readiness probe: %s", exc)
        return self.done

    def _make_reply_fifo(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.reply_path)
        os.mkfifo(self.reply_path, 0o600)
        # Our own reader first, so that the listener's open of the reply succeeds.
        self.reply_fd = os.open(self.reply_path, os.O_RDONLY | os.O_NONBLOCK)

    def _listener_has_it_open(self) -> bool:
        """A writer's non-blocking open succeeds only while someone reads the FIFO.  In
        the server that is the FIFO's claim (mi_fifo.fifofile), held open read-write from
        the start and shared with the listener: a request written from then on waits in
        the pipe until the listener reads it, so the FIFO is usable."""
        try:
            os.close(os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError:
            return False
        return True

    def _send(self) -> bool:
        """Write the request; False while the listener has not opened the FIFO yet."""
        try:
            fd = os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader: the listener is not up yet
                return False
            raise
        try:
            os.write(fd, f':{self.reply_name}:{{"jsonrpc":"2.0","method":"version","id":1}}'
                     .encode())
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        if self.reply_fd is not None:
            os.close(self.reply_fd)
            self.reply_fd = None
        with contextlib.suppress(OSError):
            os.unlink(self.reply_path)


class DatagramProbe:
    """One `version` datagram to the datagram socket; done once a reply comes back."""

    name = "datagram"
    REQUEST = b'{"jsonrpc":"2.0","method":"version","id":1}'
    RESEND = 0.5  # seconds: a datagram sent before the listener ran is still queued

    def __init__(self, address: Any) -> None:
        self.address = address  # mi_server.datagram.address.DatagramAddress
        self.sock: socket.socket | None = None
        self.sent_at: float | None = None
        self.done = False

    def step(self) -> bool:
        if self.done:
            return True
        try:
            if self.sock is None:
                self.sock = self._open()
            now = time.monotonic()
            if self.sent_at is None or now - self.sent_at >= self.RESEND:
                self.sock.sendto(self.REQUEST, self._target())
                self.sent_at = now
            if select.select([self.sock], [], [], 0)[0] and self.sock.recv(65536):
                self.done = True
                self.close()
        except OSError as exc:
            log.debug("datagram readiness probe: %s", exc)
        return self.done

    def _open(self) -> socket.socket:
        addr = self.address
        sock = socket.socket(addr.family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        if addr.is_unix:  # the reply needs an address: an abstract one leaves no file
            sock.bind(f"\0mqueue-mi-ready-{os.getpid()}-{id(self):x}")
        return sock

    def _target(self) -> Any:
        addr = self.address
        if addr.is_unix:
            return addr.path
        host = addr.host
        if ipaddress.ip_address(host).is_unspecified:
            host = "::1" if addr.family == socket.AF_INET6 else "127.0.0.1"
        return (host, addr.port)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Readiness:
    """Tells systemd READY=1 once every probe is done, and STOPPING=1 at the stop."""

    def __init__(self, notifier: Notifier, probes: list[Any]) -> None:
        self.notifier = notifier
        self.probes = probes
        self.ready = not notifier.enabled  # nobody to tell: nothing to probe

    @classmethod
    def for_server(cls, cfg: Any, http_socket: socket.socket | None) -> Readiness:
        notifier = Notifier.from_environment()
        probes: list[Any] = []
        if notifier.enabled:
            if cfg.http is not None and http_socket is not None:
                probes.append(HttpProbe(http_socket, cfg.http.root))
            if cfg.fifo is not None:
                probes.append(FifoProbe(cfg.fifo.path, cfg.fifo.reply_dir))
            if getattr(cfg, "datagram", None) is not None:
                probes.append(DatagramProbe(cfg.datagram.socket))
        return cls(notifier, probes)

    def poll(self, timeout: float) -> float:
        """Step the probes; the timeout the caller may sleep before the next poll."""
        if self.ready:
            return timeout
        if all([probe.step() for probe in self.probes]):  # a list: step every probe
            self.ready = True
            names = " and ".join(p.name for p in self.probes) or "no transport"
            self.notifier.notify("READY=1", f"STATUS=serving ({names} answered)")
            log.info("ready: %s answered; READY=1 sent to systemd", names)
            return timeout
        return min(timeout, POLL_INTERVAL)

    def stopping(self) -> None:
        for probe in self.probes:
            probe.close()
        self.notifier.notify("STOPPING=1")
