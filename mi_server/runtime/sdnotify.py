"""systemd's notification protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET.

A unit of `Type=notify` waits for `READY=1` before it counts as started and expects
`STOPPING=1` when the service begins to stop. The protocol is a few lines (a datagram of
`KEY=value` lines on an AF_UNIX socket whose path, or abstract name when it starts with
`@`, is in NOTIFY_SOCKET), so it is written here rather than taken as a dependency.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


class Notifier:
    """Sends notifications to the socket named at construction; does nothing without one."""

    def __init__(self, address: str | None) -> None:
        self.address = _socket_address(address) if address else None

    @classmethod
    def from_environment(cls) -> Notifier:
        """The notifier of $NOTIFY_SOCKET, which is then removed from the environment so that
        the children (and the commands consumers run) do not inherit it."""
        return cls(os.environ.pop(ENV, None))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send the `KEY=value` lines as one datagram; False (logged) when it fails."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(payload, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", ENV, exc.strerror or exc)
            return False
        return True


def _socket_address(value: str) -> str | bytes:
    """`@name` is a name in the abstract namespace (a leading NUL byte); else a path."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value
