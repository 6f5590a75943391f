"""Routing of the web page: WSGI environ in, (status, headers, body) out.

    GET  /<root>/               overview: every queue, the server, a live chart
    GET  /<root>/state.json     what the overview shows, polled by its script
    GET  /<root>/mi/            the MI commands, grouped by module
    GET  /<root>/mi/<command>   a command's help, recipes and form; `?arg=` runs it when
                                it changes nothing (like mi_html)
    POST /<root>/mi/<command>   runs it: same-origin check + per-page token (csrf.py);
                                commands with side effects only when `side_effects` is on
    GET  /<root>/static/<file>  the page's own script and style sheet

Every reply carries a Content-Security-Policy that allows only this server's own script
and style files, so even a value that slipped through escaping could not run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.http import HTTP_STATUS_CODES

from . import csrf
from .state import Handle, MIError, call, overview

Reply = tuple[str, list[tuple[str, str]], bytes]

SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
MAX_FORM = 65536


@dataclass(frozen=True)
class WebSettings:
    """The attributes of config.HtmlConfig this package reads."""

    root: str
    side_effects: bool
    secret: bytes


def _reply(code: int, body: bytes, content_type: str,
           extra: Sequence[tuple[str, str]] = ()) -> Reply:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
               *SECURITY_HEADERS, *extra]
    return f"{code} {HTTP_STATUS_CODES[code]}", headers, body


def _static_files() -> dict[str, Reply]:
    files = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind("."):]
        if suffix in STATIC_TYPES:
            body = entry.read_bytes()
            status, headers, _ = _reply(200, body, STATIC_TYPES[suffix])
            headers = [h for h in headers if h[0] != "Cache-Control"]
            headers.append(("Cache-Control", "max-age=300"))
            files[entry.name] = (status, headers, body)
    return files


class WebApp:
    def __init__(self, handle: Handle, registry: Any, settings: WebSettings,
                 specs: Sequence[Any]) -> None:
        self.handle, self.registry, self.settings, self.specs = handle, registry, settings, specs
        self.root = "/" + settings.root.strip("/")
        self.env = Environment(loader=PackageLoader(__package__, "templates"),
                               autoescape=select_autoescape(default=True,
                                                            default_for_string=True))
        self.static = _static_files()

    def owns(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    # ---- dispatch --------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any]) -> Reply:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        rest = path[len(self.root):].lstrip("/")
        method = environ["REQUEST_METHOD"]
        if rest.startswith("static/"):
            found = self.static.get(rest[len("static/"):])
            if method != "GET":
                return self._text(405, "Only GET is served here.", (("Allow", "GET"),))
            return found or self._text(404, "No such file.")
        if rest in ("", "state.json", "mi", "mi/"):
            if method != "GET":
                return self._text(405, "Only GET is served here.", (("Allow", "GET"),))
            if rest == "":
                return self._page("overview.html", state=self._state_or_error())
            if rest == "state.json":
                return self._state_json()
            return self._page("commands.html", modules=self._modules())
        if rest.startswith("mi/"):
            return self._command(environ, method, rest[len("mi/"):])
        return self._text(404, "No such page.")

    # ---- pages -----------------------------------------------------------------------

    def _page(self, template: str, code: int = 200, **values: Any) -> Reply:
        body = self.env.get_template(template).render(
            root=self.root, token=csrf.issue(self.settings.secret), **values).encode()
        return _reply(code, body, "text/html; charset=utf-8")

    def _text(self, code: int, message: str,
              extra: Sequence[tuple[str, str]] = ()) -> Reply:
        return _reply(code, (message + "\n").encode(), "text/plain; charset=utf-8", extra)

    def _state_or_error(self) -> dict[str, Any] | str:
        try:
            return overview(self.handle, self.specs)
        except (MIError, KeyError, TypeError, ValueError) as exc:
            return f"the MI answered: {exc}"

    def _state_json(self) -> Reply:
        state = self._state_or_error()
        if isinstance(state, str):
            return _reply(503, json.dumps({"error": state}).encode(), "application/json")
        return _reply(200, json.dumps(state).encode(), "application/json")

    def _modules(self) -> list[tuple[str, list[Any]]]:
        modules: dict[str, list[Any]] = {}
        for name in self.registry.names():
            cmd = self.registry.get(name)
            if cmd is not None and cmd.name == name:  # aliases are listed with their command
                modules.setdefault(cmd.module, []).append(cmd)
        return list(modules.items())

    def _allowed(self, cmd: Any) -> bool:
        return self.settings.side_effects or not cmd.side_effects

    def _command(self, environ: dict[str, Any], method: str, name: str) -> Reply:
        cmd = self.registry.get(name)
        if cmd is None or cmd.name != name:
            return self._text(404, "No such MI command.")
        if method == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            if "arg" in query and not cmd.side_effects:
                return self._run(cmd, query["arg"][0])
            return self._page("command.html", cmd=cmd, allowed=self._allowed(cmd), arg="")
        if method != "POST":
            return self._text(405, "Only GET and POST are served here.",
                              (("Allow", "GET, POST"),))
        form = self._form(environ)
        refusal = self._refusal(environ, cmd, form)
        if refusal is not None:
            return self._page("command.html", 403, cmd=cmd, allowed=self._allowed(cmd),
                              arg="", refused=refusal)
        return self._run(cmd, form.get("arg", [""])[0])

    def _form(self, environ: dict[str, Any]) -> dict[str, list[str]]:
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def _refusal(self, environ: dict[str, Any], cmd: Any,
                 form: dict[str, list[str]]) -> str | None:
        """Why this POST must not run, or None.  A browser always says where a POST comes
        from (Origin, or at least Sec-Fetch-Site); a request that says neither, or names
        another site, is not this page's form."""
        if not self._allowed(cmd):
            return "commands with side effects are switched off in the configuration"
        origin = environ.get("HTTP_ORIGIN")
        host = environ.get("HTTP_HOST", "")
        scheme = environ.get("wsgi.url_scheme", "http")
        if origin is not None:
            if origin != f"{scheme}://{host}":
                return "the request came from another site"
        elif environ.get("HTTP_SEC_FETCH_SITE") != "same-origin":
            return "the request did not say it came from this page"
        token = form.get("token", [""])[0]
        if not csrf.valid(self.settings.secret, token):
            return "the page's token is missing or expired: reload the page"
        return None

    def _run(self, cmd: Any, arg: str) -> Reply:
        arg = arg.strip()
        params: Any = None
        if arg:
            try:
                params = json.loads(arg)
            except ValueError:
                params = _NOT_JSON
            if params is _NOT_JSON or not isinstance(params, (list, dict)):
                return self._page("command.html", 400, cmd=cmd, allowed=self._allowed(cmd),
                                  arg=arg, refused="arg must be a JSON array or object, "
                                                   'e.g. ["myq"] or {"name": "myq"}')
        try:
            result = call(self.handle, cmd.name, params)
            shown, failed = json.dumps(result, indent=4, ensure_ascii=False), False
        except MIError as exc:
            shown, failed = f"{exc.code}: {exc.message}", True
        return self._page("command.html", cmd=cmd, allowed=self._allowed(cmd), arg=arg,
                          result=shown, failed=failed)


_NOT_JSON = object()


def make_web_app(handle: Handle, registry: Any, settings: WebSettings,
                 specs: Sequence[Any]) -> WebApp:
    return WebApp(handle, registry, settings, specs)


WebHandler = Callable[[dict[str, Any]], Reply]
