"""The MI-over-HTTP behaviour as one WSGI application (the single definition of it).

Everything mi_http decides lives here: which paths match the root, which methods are
allowed, basic auth, the body size limit, and how a JSON-RPC reply or a notification
becomes an HTTP response. Any WSGI server can serve it (gunicorn does, in the
benchmark); our own pre-fork loop (`mi_server.http.server`) calls it for every request,
including the requests it refuses early for size, so there is no second copy of these
rules.

It reads the WSGI environ directly and uses Werkzeug's sans-io pieces (Authorization
header parsing, status phrases) rather than the Request/Response wrappers: the wrappers
cost about 40 µs per request here for nothing this app needs (see
benchmarks/http_serving_options.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from werkzeug.datastructures import Authorization
from werkzeug.http import HTTP_STATUS_CODES

from .guard import make_guard

Handle = Callable[[bytes], "bytes | None"]
StartResponse = Callable[..., Any]
WSGIApplication = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

REALM = "OpenSIPS MI"


class HttpSettings(Protocol):
    """The attributes of config.HttpConfig this package reads."""

    host: str
    port: int
    root: str
    workers: int
    max_request: int
    auth: tuple[str, str] | None
    allowed_origins: tuple[str, ...]
    server_names: tuple[str, ...]


def _status(code: int) -> str:
    return f"{code} {HTTP_STATUS_CODES[code]}"


def _plain(code: int, extra: tuple[tuple[str, str], ...] = ()) -> tuple[str, list, bytes]:
    """A refusal: status line, headers, and the reason phrase as a short text body."""
    body = HTTP_STATUS_CODES[code].encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    return _status(code), headers, body


def _page(code: int, text: bytes) -> tuple[str, list, bytes]:
    """One of OpenSIPS httpd's own error pages: `text/html`, the text in a bare body."""
    body = b"<html><body>" + text + b"</body></html>"
    return _status(code), [("Content-Type", "text/html"), ("Content-Length", str(len(body)))], body


# OpenSIPS httpd's texts (measured on OpenSIPS 3.6.8): a method other than GET and POST,
# and a path outside the root
UNSUPPORTED_TEXT = b"Unsupported HTTP request!"
BAD_URL_TEXT = b"Unable to parse URL!"

# Refusals are the same bytes every time: build them once, not per request.
_BAD_REQUEST = _plain(400)  # an empty body, a bad Content-Length
_BAD_URL = _page(400, BAD_URL_TEXT)  # a path outside the root (and any other page's)
_GET = _plain(405, (("Allow", "POST"),))
_OTHER_METHOD = _page(406, UNSUPPORTED_TEXT)  # case-sensitive: "post" is one too
_TOO_LARGE = _plain(413)
_FORBIDDEN = _plain(403)  # a browser's request from a foreign page or name (guard.py)
_UNAUTHORIZED = _plain(401, (("WWW-Authenticate", f'Basic realm="{REALM}"'),))
_ACCEPTED = ("202 Accepted", [("Content-Length", "0")], b"")
_OK = "200 OK"


def _checker(auth: tuple[str, str] | None) -> Callable[[str | None], bool] | None:
    """A function telling whether an Authorization header carries the configured secret."""
    if auth is None:
        return None
    user, password = auth[0].encode(), auth[1].encode()

    def authorized(header: str | None) -> bool:
        parsed = Authorization.from_header(header) if header else None
        if parsed is None or parsed.type != "basic":
            return False
        # Both comparisons always run (no short-circuit) so timing reveals neither part.
        ok_user = hmac.compare_digest((parsed.username or "").encode(), user)
        ok_password = hmac.compare_digest((parsed.password or "").encode(), password)
        return ok_user & ok_password

    return authorized


credentials_checker = _checker  # for pages with their own rule (mi_server.monitoring)


class WebPage(Protocol):
    """The web page (mi_server.web.WebApp): the paths it owns, and their replies."""

    def owns(self, path: str) -> bool: ...
    def __call__(self, environ: dict[str, Any]) -> tuple[str, list, bytes]: ...


def make_wsgi_app(handle: Handle, cfg: HttpSettings, web: WebPage | None = None,
                  monitor: WebPage | None = None) -> WSGIApplication:
    """The WSGI app serving `handle` (JSON-RPC bytes -> reply bytes | None) under cfg.root,
    the web page under its own root when one is given, and the monitoring pages (GET
    /metrics, /health: mi_server.monitoring.pages), which apply their own authentication
    rule (none by default: Prometheus and load balancers send no credentials)."""
    root = "/" + cfg.root.strip("/")
    root_dir = root + "/"
    limit = cfg.max_request
    authorized = _checker(cfg.auth)
    browser_safe = make_guard(cfg)

    def read_body(environ: dict[str, Any]) -> bytes | tuple[str, list, bytes]:
        """The request body, or the refusal when it is too large or badly framed."""
        stream = environ["wsgi.input"]
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return _BAD_REQUEST
            if length < 0:
                return _BAD_REQUEST
            if length > limit:  # decided from the header, before reading anything
                return _TOO_LARGE
            return stream.read(length)
        if environ.get("wsgi.input_terminated"):
            # Chunked body already de-framed by the server: read one byte past the
            # limit so an oversized body is seen without buffering more than that.
            body = stream.read(limit + 1)
            return _TOO_LARGE if len(body) > limit else body
        return b""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if not browser_safe(environ.get("HTTP_HOST"), environ.get("HTTP_ORIGIN"),
                            environ.get("HTTP_SEC_FETCH_SITE")):
            status, headers, body = _FORBIDDEN  # first: whatever the path, method or auth
        elif path != root and not path.startswith(root_dir):
            if monitor is not None and monitor.owns(path):
                status, headers, body = monitor(environ)
            elif web is not None and web.owns(path):
                if authorized is not None and not authorized(environ.get("HTTP_AUTHORIZATION")):
                    status, headers, body = _UNAUTHORIZED
                else:
                    status, headers, body = web(environ)
            else:
                status, headers, body = _BAD_URL
        elif authorized is not None and not authorized(environ.get("HTTP_AUTHORIZATION")):
            status, headers, body = _UNAUTHORIZED
        elif (method := environ["REQUEST_METHOD"]) != "POST":
            status, headers, body = _GET if method == "GET" else _OTHER_METHOD
        else:
            request = read_body(environ)
            if type(request) is tuple:
                status, headers, body = request
            elif not request:
                status, headers, body = _BAD_REQUEST
            else:
                reply = handle(request)  # runs to completion before any status is sent
                if reply is None:
                    status, headers, body = _ACCEPTED
                else:
                    status, body = _OK, reply
                    headers = [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(reply))),
                    ]
        start_response(status, list(headers))
        return (body,)

    return app
