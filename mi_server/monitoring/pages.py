"""The monitoring pages on the HTTP listener: GET /<metrics root> and GET /<health root>.

Served beside MI (mi_server.http.app calls `owns` then the page), with no authentication
unless http.metrics.auth / http.health.auth ask for it (then http.auth's credentials, as MI).
Other methods than GET (and HEAD for /health) get 405, as OpenSIPS's httpd answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mi_server.config import HealthConfig, MetricsConfig
from mi_server.mi.commands.statistics import all_stats, selected
from mi_server.mi.context import MIContext
from mi_server.monitoring.prometheus import CONTENT_TYPE, render, render_all
from mi_server.runtime.statusboard import core_readiness

Reply = tuple[str, list, bytes]


def _reply(status: str, content_type: str, body: bytes, extra: tuple = ()) -> Reply:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), *extra]
    return status, headers, body


_NOT_ALLOWED_METRICS = _reply("405 Method Not Allowed", "text/plain", b"Method Not Allowed",
                              (("Allow", "GET"),))
_NOT_ALLOWED_HEALTH = _reply("405 Method Not Allowed", "text/plain", b"Method Not Allowed",
                             (("Allow", "GET, HEAD"),))
_UNAUTHORIZED = _reply("401 Unauthorized", "text/plain", b"Unauthorized",
                       (("WWW-Authenticate", 'Basic realm="OpenSIPS MI"'),))


class MonitorPages:
    """The WebPage protocol of mi_server.http.app for /metrics and /health."""

    def __init__(self, ctx: MIContext, metrics: MetricsConfig | None,
                 health: HealthConfig | None,
                 authorized: Callable[[str | None], bool] | None) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self.health = health
        self.authorized = authorized
        self._routes: dict[str, tuple[Callable[[dict[str, Any]], Reply], bool]] = {}
        if metrics is not None:
            self._routes["/" + metrics.root] = (self._metrics, metrics.auth)
        if health is not None:
            self._routes["/" + health.root] = (self._health, health.auth)

    def owns(self, path: str) -> bool:
        return path in self._routes

    def __call__(self, environ: dict[str, Any]) -> Reply:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        page, needs_auth = self._routes[path]
        if needs_auth and self.authorized is not None \
                and not self.authorized(environ.get("HTTP_AUTHORIZATION")):
            return _UNAUTHORIZED
        return page(environ)

    def _metrics(self, environ: dict[str, Any]) -> Reply:
        if environ["REQUEST_METHOD"] != "GET":
            return _NOT_ALLOWED_METRICS
        assert self.metrics is not None
        wanted = self.metrics.statistics
        if wanted == ("all",):  # the default: every statistic once, nothing to select
            return _reply("200 OK", CONTENT_TYPE, render_all(self.metrics, self.ctx))
        stats, seen = [], set()
        for _, st in selected(all_stats(self.ctx), list(wanted), True):
            if st.full_name not in seen:  # a statistic named twice is exported once
                seen.add(st.full_name)
                stats.append(st)
        return _reply("200 OK", CONTENT_TYPE, render(self.metrics, stats))

    def _health(self, environ: dict[str, Any]) -> Reply:
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _NOT_ALLOWED_HEALTH
        ready, details = core_readiness(self.ctx.status())
        status, body = (("200 OK", b"OK\n") if ready else
                        ("503 Service Unavailable", f"not ready: {details}\n".encode()))
        if method == "HEAD":  # the status and headers alone (Content-Length of the GET)
            reply = _reply(status, "text/plain", body)
            return reply[0], reply[1], b""
        return _reply(status, "text/plain", body)
