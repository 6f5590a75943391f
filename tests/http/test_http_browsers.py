"""A browser tricked by a web page must not run MI commands: a foreign Origin, a
cross-site fetch or a foreign Host (DNS rebinding) get 403 and nothing runs; MI clients
(curl's form type, http.client, opensips-cli's urllib) keep working."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess

import pytest

from mi_server.config import ConfigError, HttpConfig, parse_config
from mi_server.http.guard import make_guard, normalize_origin

ADD = b'{"jsonrpc":"2.0","method":"mq_add","params":["q1","k","v"],"id":1}'


def post(port: int, headers: dict[str, str], body: bytes = ADD) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/mi", body=body, headers=headers)  # a Host here replaces its own
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def browser(port: int, origin: str | None = "http://evil.example", **extra: str
            ) -> dict[str, str]:
    """What a browser sends for a page's fetch(..., {method: "POST", body}) to the MI."""
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "text/plain;charset=UTF-8",
               "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "cross-site",
               "User-Agent": "Mozilla/5.0"}
    if origin is not None:
        headers["Origin"] = origin
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


@pytest.mark.parametrize("headers", [
    pytest.param(lambda p: browser(p), id="foreign-origin"),
    pytest.param(lambda p: browser(p, "null"), id="null-origin"),
    pytest.param(lambda p: browser(p, None), id="cross-site-no-origin"),
    pytest.param(lambda p: browser(p, "http://127.0.0.1:3000", Sec_Fetch_Site="same-site"),
                 id="other-local-port"),
    pytest.param(lambda p: {"Host": f"rebound.evil.example:{p}",
                            "Content-Type": "application/json"}, id="dns-rebinding"),
    pytest.param(lambda p: {"Host": f"rebound.evil.example:{p}",
                            "Origin": f"http://rebound.evil.example:{p}",
                            "Content-Type": "application/json"}, id="rebinding-same-origin"),
    pytest.param(lambda p: {"Host": f"127.0.0.1:{p + 1}"}, id="other-port"),
    pytest.param(lambda p: {"Host": f"[::1]:{p}"}, id="loopback-the-listener-is-not-on"),
    pytest.param(lambda p: {"Host": f"127.0.0.1 evil.example:{p}"}, id="garbage-host"),
])
def test_a_request_a_web_page_could_send_is_403_and_runs_nothing(serve, arena, headers):
    s = serve()
    status, body = post(s.port, headers(s.port))
    assert (status, body) == (403, b"Forbidden")
    assert arena.size("q1") == 0


@pytest.mark.parametrize("host", ["127.0.0.1:{p}", "localhost:{p}", "LOCALHOST:{p}",
                                  "127.1:{p}", "2130706433:{p}", None])
def test_mi_clients_naming_the_listen_address_are_served(serve, arena, host):
    s = serve()
    headers = {"Content-Type": "application/json"}
    if host is not None:
        headers["Host"] = host.format(p=s.port)
        status, body = post(s.port, headers)
    else:  # HTTP/1.0 clients may send no Host: a browser always sends one
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"POST /mi HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(ADD), ADD))
            reply = b""
            while chunk := c.recv(65536):
                reply += chunk
        status, body = int(reply.split()[1]), reply.split(b"\r\n\r\n", 1)[1]
    assert status == 200 and json.loads(body)["result"] == "OK"
    assert arena.size("q1") == 1


def test_curls_form_type_without_origin_keeps_working(serve, arena):
    s = serve()
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-d", ADD.decode(),
                          f"http://127.0.0.1:{s.port}/mi"],
                         capture_output=True, check=True, timeout=30).stdout
    body, _, code = out.rpartition(b"\n")
    assert code == b"200" and json.loads(body)["result"] == "OK"
    assert arena.size("q1") == 1


def test_the_listeners_own_page_is_same_origin_and_served(serve, arena):
    s = serve()
    own = f"http://127.0.0.1:{s.port}"
    status, _ = post(s.port, browser(s.port, own, Sec_Fetch_Site="same-origin"))
    assert status == 200 and arena.size("q1") == 1


def test_configured_origins_and_server_names_are_served(serve, arena):
    s = serve(allowed_origins=("https://Console.Example.org",),
              server_names=("mi.example.org",))
    assert post(s.port, browser(s.port, "https://console.example.org:443"))[0] == 200
    assert post(s.port, {"Host": "mi.example.org"})[0] == 200  # e.g. behind a proxy
    assert post(s.port, {"Host": f"mi.example.org:{s.port}"})[0] == 200
    assert post(s.port, browser(s.port, "https://console.example.org:8443"))[0] == 403
    assert post(s.port, {"Host": "other.example.org"})[0] == 403
    assert arena.size("q1") == 3


def test_a_wildcard_listener_takes_any_address_but_no_unconfigured_name(serve, arena):
    s = serve(host="0.0.0.0")
    assert post(s.port, {"Host": f"127.0.0.1:{s.port}"})[0] == 200
    assert post(s.port, {"Host": f"192.0.2.7:{s.port}"})[0] == 200  # an address: no rebinding
    assert post(s.port, {"Host": f"localhost:{s.port}"})[0] == 200
    assert post(s.port, {"Host": f"rebound.evil.example:{s.port}"})[0] == 403
    assert arena.size("q1") == 3


def test_get_pages_are_guarded_too(serve):
    s = serve()
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.request("GET", "/mi", headers={"Host": f"rebound.evil.example:{s.port}"})
    assert conn.getresponse().status == 403
    conn.close()


@pytest.mark.parametrize(("http", "problem"), [
    ({"allowed_origins": "http://a.example"}, "http.allowed_origins: must be a list"),
    ({"allowed_origins": ["http://a.example/path"]}, "bad origin 'http://a.example/path'"),
    ({"allowed_origins": ["a.example"]}, "bad origin 'a.example'"),
    ({"allowed_origins": [8888]}, "bad origin 8888"),
    ({"server_names": ["a b"]}, "http.server_names: bad host name 'a b'"),
    ({"server_names": "mi.example"}, "http.server_names: must be a list"),
])
def test_bad_browser_rules_are_config_errors(http, problem, tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"http": http}, "t.yaml", tmp_path)
    assert any(problem in line for line in err.value.problems), err.value.problems


def test_browser_rules_are_read_from_the_config(tmp_path):
    cfg = parse_config({"http": {"allowed_origins": ["http://a.example:8080"],
                                 "server_names": ["mi.example.org"]}}, "t.yaml", tmp_path)
    assert cfg.http.allowed_origins == ("http://a.example:8080",)
    assert cfg.http.server_names == ("mi.example.org",)


@pytest.mark.parametrize(("text", "normal"), [
    ("http://127.0.0.1:8888", "http://127.0.0.1:8888"),
    ("HTTPS://Console.Example.org:443/", "https://console.example.org"),
    ("http://[::1]:80", "http://[::1]"),
    ("http://a.example:99999", None), ("http://a.example/x", None), ("null", None),
    ("ftp://a.example", None), ("http://", None),
])
def test_origins_are_compared_normalized(text, normal):
    assert normalize_origin(text) == normal


def test_an_ipv6_loopback_listener_takes_its_own_spellings_only():
    allowed = make_guard(HttpConfig(host="::1", port=8888))
    assert allowed("[::1]:8888", None, None) and allowed("[0:0::1]:8888", None, None)
    assert allowed("localhost:8888", None, None)
    assert not allowed("127.0.0.1:8888", None, None)  # another socket: not this listener
    assert not allowed("[::1]", None, None)  # port 80
