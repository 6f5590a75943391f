"""Per-page tokens for the forms that run a command (no cross-site request forgery).

A token is `<issued unix time>.<hex HMAC-SHA256 of it>` under a secret made once per server
(before the HTTP workers fork, so every worker accepts the tokens of every other). It is
stateless: nothing is stored per page, and a token stops working after MAX_AGE seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time

MAX_AGE = 3600.0


def _mac(secret: bytes, issued: str) -> str:
    return hmac.new(secret, b"mqueue-mi page|" + issued.encode(), hashlib.sha256).hexdigest()


def issue(secret: bytes, now: float | None = None) -> str:
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{_mac(secret, issued)}"


def valid(secret: bytes, token: str, now: float | None = None) -> bool:
    issued, sep, mac = token.partition(".")
    if not sep or not issued.isdigit():
        return False
    age = (time.time() if now is None else now) - int(issued)
    if not 0 <= age <= MAX_AGE:
        return False
    return hmac.compare_digest(mac, _mac(secret, issued))
