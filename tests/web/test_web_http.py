"""The web page's HTTP rules, checked with a plain HTTP client against a real server."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlencode

import pytest

from mi_server.http import fastpath
from mi_server.web import csrf
from tests.web.conftest import start_server, stop_server


@pytest.fixture(scope="module", params=["compiled", "python"])
def server(request):
    """The page's server both ways: with the HTTP workers' compiled fast path (which must
    leave every page to the Python path) and without it."""
    srv = start_server(env={fastpath.ENV: "0" if request.param == "python" else "1"})
    yield srv
    stop_server(srv)


def get(srv, path: str, headers: dict | None = None) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def post_form(srv, path: str, fields: dict, headers: dict | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        sent = {"Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://127.0.0.1:{srv.port}", **(headers or {})}
        conn.request("POST", path, urlencode(fields),
                     {k: v for k, v in sent.items() if v is not None})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def token_of(html: str) -> str:
    return html.split('name="token" value="', 1)[1].split('"', 1)[0]


def test_every_page_forbids_foreign_scripts_and_framing(server):
    for path in ("/html/", "/html/mi/", "/html/mi/mq_fetch", "/html/state.json"):
        status, headers, _ = get(server, path)
        assert status == 200, path
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_get_runs_only_commands_that_change_nothing(server):
    server.mi("mq_add", ["web_q", "get", "me"])
    before = server.mi("mq_get_size", ["web_q"])["Queue"]["size"]
    status, _, html = get(server, '/html/mi/mq_fetch?arg=["web_q"]'.replace('"', "%22"))
    assert status == 200 and 'id="result"' not in html
    assert server.mi("mq_get_size", ["web_q"])["Queue"]["size"] == before
    status, _, html = get(server, '/html/mi/mq_get_size?arg=["web_q"]'.replace('"', "%22"))
    assert f"&#34;size&#34;: {before}" in html


def test_a_post_needs_this_page_s_token_and_origin(server):
    _, _, html = get(server, "/html/mi/mq_add")
    token = token_of(html)
    args = {"arg": '["web_q","t","v"]'}
    before = server.mi("mq_get_size", ["web_q"])["Queue"]["size"]
    assert post_form(server, "/html/mi/mq_add", {**args, "token": "1.forged"})[0] == 403
    expired = csrf.issue(b"x" * 32, now=0)
    assert post_form(server, "/html/mi/mq_add", {**args, "token": expired})[0] == 403
    status, body = post_form(server, "/html/mi/mq_add", {**args, "token": token},
                             {"Origin": "http://evil.example"})
    assert status == 403
    # neither Origin nor Sec-Fetch-Site: not a browser's form
    status, body = post_form(server, "/html/mi/mq_add", {**args, "token": token},
                             {"Origin": None})
    assert status == 403 and "did not say" in body
    status, body = post_form(server, "/html/mi/mq_add", {**args, "token": token},
                             {"Origin": None, "Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert server.mi("mq_get_size", ["web_q"])["Queue"]["size"] == before
    status, body = post_form(server, "/html/mi/mq_add", {**args, "token": token})
    assert status == 200 and "&#34;OK&#34;" in body
    assert server.mi("mq_get_size", ["web_q"])["Queue"]["size"] == before + 1


def test_a_bad_arg_is_explained_not_run(server):
    _, _, html = get(server, "/html/mi/mq_get_size")
    status, body = post_form(server, "/html/mi/mq_get_size",
                             {"arg": "web_q", "token": token_of(html)})
    assert status == 400 and "must be a JSON array or object" in body


def test_an_mi_error_is_shown_with_its_code(server):
    status, _, html = get(server, '/html/mi/mq_get_size?arg=["nope"]'.replace('"', "%22"))
    assert status == 200 and "404: No such queue" in html


def test_unknown_pages_and_files_are_404(server):
    assert get(server, "/html/nothing")[0] == 404
    assert get(server, "/html/static/../app.py")[0] == 404
    assert get(server, "/html/mi/no_such_command")[0] == 404
    assert get(server, "/htmlx")[0] == 400  # outside both roots, as for /mifoo


@pytest.fixture(scope="module")
def locked_server():
    srv = start_server({"html": {"side_effects": False, "root": "ops/page"}})
    yield srv
    stop_server(srv)


def test_side_effects_switched_off_refuses_them_and_hides_their_form(locked_server):
    srv = locked_server
    status, _, html = get(srv, "/ops/page/mi/mq_add")
    assert status == 200 and "<form" not in html and "switched off" in html
    status, _, html = get(srv, "/ops/page/mi/mq_get_sizes")
    assert "<form" in html
    status, body = post_form(srv, "/ops/page/mi/mq_add",
                             {"arg": '["web_q","k","v"]', "token": token_of(html)})
    assert status == 403 and "switched off" in body
    assert srv.mi("mq_get_size", ["web_q"])["Queue"]["size"] == 0
    assert get(srv, "/html/")[0] == 400  # the page moved with its root


def test_basic_auth_covers_the_page():
    srv = start_server({"auth": {"username": "admin", "password": "pw"}}, wait=False)
    srv.launch()
    try:
        deadline = time.monotonic() + 20
        while True:  # up once it answers (the MI itself needs the password too)
            try:
                status = get(srv, "/html/")[0]
                break
            except OSError:
                assert time.monotonic() < deadline, srv.stderr()
                time.sleep(0.05)
        assert status == 401
        assert get(srv, "/html/static/page.css")[0] == 401
        ok = {"Authorization": "Basic YWRtaW46cHc="}
        assert get(srv, "/html/", ok)[0] == 200
    finally:
        stop_server(srv)


def test_an_origin_allowed_for_the_mi_still_cannot_post_the_page_s_forms():
    """http.allowed_origins lets another site's script call /mi; the page's forms stay
    this server's own."""
    srv = start_server({"allowed_origins": ["http://tool.example"]})
    try:
        _, _, html = get(srv, "/html/mi/mq_add")
        status, body = post_form(srv, "/html/mi/mq_add",
                                 {"arg": '["web_q","k","v"]', "token": token_of(html)},
                                 {"Origin": "http://tool.example"})
        assert status == 403 and "another site" in body
        assert srv.mi("mq_get_size", ["web_q"])["Queue"]["size"] == 0
    finally:
        stop_server(srv)
