"""Which HTTP requests a browser may have been tricked into sending: refused with 403.

Any web page the operator visits can make the browser POST to the MI listener: with
`Content-Type: text/plain` (a "simple" request, no CORS preflight) it runs, and DNS
rebinding (a name of the attacker's that resolves to 127.0.0.1) even lets the page read
the reply. MI clients (opensips-cli, the `opensips` package, curl, probes) send no
`Origin` and a `Host` naming the address they connected to, so two rules stop browsers
without touching them:

- Origin: a request carrying `Origin` (browsers send it on every cross-origin request and
  on POSTs) is served only when that origin is in `http.allowed_origins` or is this
  server's own (`http://` + the request's accepted `Host`, e.g. a page served by this
  listener). `Sec-Fetch-Site: cross-site` without such an Origin is refused too.
- Host: a request naming a `Host` is served only when it names the listen address with
  its port (an IPv4 address in any spelling `inet_aton` reads, `[v6]`, `localhost` when
  the listener is on loopback, any IP address when it listens on every address), or a
  name in `http.server_names` (with any port). A missing `Host` (HTTP/1.0 clients) is
  served: browsers always send one.

Kept apart from the WSGI app so that every path serving requests (app.py and any
compiled fast path) applies the same rules: `make_guard(cfg)(host, origin, fetch_site)`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

DEFAULT_PORT = 80
LOOPBACK_NAMES = ("localhost",)
_INET_ATON_FORM = re.compile(r"[0-9a-fx.]+")  # decimal, octal and 0x hex parts, lower-cased
_CACHE_MAX = 256  # distinct Host values remembered per worker (bounded: Host is input)

Guard = Callable[["str | None", "str | None", "str | None"], bool]


class GuardSettings(Protocol):
    host: str
    port: int
    allowed_origins: tuple[str, ...]
    server_names: tuple[str, ...]


def normalize_origin(text: str) -> str | None:
    """`scheme://host[:port]` lower-cased, the scheme's default port dropped, or None.
    (One trailing "/" is allowed, as an operator may write it; browsers send none.)"""
    text = text.strip()
    if text.endswith("/"):
        text = text[:-1]
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        return None
    split = _split_host(rest)
    if split is None:
        return None
    name, port = split
    default = DEFAULT_PORT if scheme == "http" else 443
    shown = f"[{name}]" if ":" in name else name
    return f"{scheme}://{shown}" + ("" if port in (None, default) else f":{port}")


def _split_host(text: str) -> tuple[str, int | None] | None:
    """Host header text -> (lower-case name or address without brackets, port or None)."""
    text = text.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            return None  # an IPv6 address must be in brackets
        name, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        return None
    return name, int(port_text)


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a Host name spells, if it is an address literal (any IPv4 form
    inet_aton reads, as curl and browsers do: 127.1, 0x7f.0.0.1, 2130706433)."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if not _INET_ATON_FORM.fullmatch(name):
        return None  # glibc's inet_aton ignores what follows a space: "127.0.0.1 x.example"
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def _listen_addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """What the listener is bound to (bind resolves a name the same way)."""
    address = _address(host)
    if address is not None:
        return {address}
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return set()
    found = set()
    for info in infos[:1]:  # listen.bind binds the first
        found.add(ipaddress.ip_address(info[4][0].split("%")[0]))
    return found


def make_guard(cfg: GuardSettings) -> Guard:
    """`allowed(host, origin, fetch_site)`: False for a request to refuse with 403."""
    port = cfg.port
    bound = _listen_addresses(cfg.host)
    wildcard = any(a.is_unspecified for a in bound)
    loopback = wildcard or any(a.is_loopback for a in bound)
    names = {cfg.host.lower()}
    if loopback:
        names.update(LOOPBACK_NAMES)
    extra_names = {n.lower().rstrip(".") for n in cfg.server_names}
    origins = {o for o in (normalize_origin(t) for t in cfg.allowed_origins) if o}
    hosts: dict[str, bool] = {}

    def host_ok(text: str) -> bool:
        split = _split_host(text)
        if split is None:
            return False
        name, given = split
        if name.rstrip(".") in extra_names:
            return True
        if (DEFAULT_PORT if given is None else given) != port:
            return False
        if name in names:
            return True
        address = _address(name)
        if address is None:
            return False
        if wildcard:
            return True  # every address of this host reaches the listener
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return address in bound

    def allowed(host: str | None, origin: str | None, fetch_site: str | None) -> bool:
        if host is not None:
            ok = hosts.get(host)
            if ok is None:
                ok = host_ok(host)
                if len(hosts) < _CACHE_MAX:
                    hosts[host] = ok
            if not ok:
                return False
        if origin is None:
            return fetch_site is None or fetch_site.strip().lower() != "cross-site"
        normalized = normalize_origin(origin)
        if normalized is None:
            return False  # "null" (a sandboxed or file: page), or garbage
        if normalized in origins:
            return True
        # this listener's own page: same origin as the Host it was reached by
        return host is not None and normalized == normalize_origin("http://" + host)

    return allowed


def check_origins(values: Iterable[object]) -> list[str]:
    """Problems of configured `http.allowed_origins` entries (for the config parser)."""
    problems = []
    for value in values:
        if not isinstance(value, str) or normalize_origin(value) is None:
            problems.append(f"bad origin {value!r} (scheme://host[:port], e.g. "
                            "http://127.0.0.1:8888, no path)")
    return problems
