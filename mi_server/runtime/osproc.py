"""Two Linux niceties for child processes, via prctl(2); no-ops where unavailable."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # not Linux / no libc: both helpers do nothing
    _prctl = None


def set_parent_death_signal(sig: signal.Signals) -> None:
    """Have the kernel send `sig` to this process when its parent dies (no orphans)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def set_process_title(title: str) -> None:
    """Set the name `ps -o comm` and top show (the kernel keeps 15 bytes)."""
    if _prctl is not None:
        _prctl(PR_SET_NAME, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)
