"""Restart back-off for a child process that keeps dying: 0.1 s doubling up to 5 s.

A child that stayed up for `stable_after` seconds is considered healthy again, so its
next crash is restarted after the initial delay instead of the last (long) one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    stable_after: float = 10.0
    failures: int = 0  # consecutive quick deaths

    def next_delay(self, uptime: float) -> float:
        """The delay before restarting a child that died after `uptime` seconds."""
        if uptime >= self.stable_after:
            self.failures = 0
        delay = min(self.initial * (2**self.failures), self.maximum)
        self.failures += 1
        return delay
