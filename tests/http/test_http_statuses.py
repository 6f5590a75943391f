"""HTTP status rules of mi_http over real workers: paths, methods, bodies, auth, curl."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess

import pytest

from tests.http.rawhttp import closed_by_peer, post, read_reply

SIZE = b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":"1"}'


def call(port: int, method: str, path: str, body: bytes | None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def test_json_rpc_reply_is_200_application_json(serve, core_handle):
    s = serve()
    resp, data = call(s.port, "POST", "/mi", SIZE, {"Content-Type": "application/json"})
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert data == core_handle(SIZE)  # the core's bytes, untouched
    assert json.loads(data)["id"] == "1" and "result" in json.loads(data)
    assert resp.getheader("Content-Length") == str(len(data))


def test_json_rpc_error_reply_is_still_200(serve):
    s = serve()
    resp, data = call(s.port, "POST", "/mi", b"{not json")
    assert resp.status == 200
    assert json.loads(data)["error"]["code"] == -32700


def test_notification_is_202_empty_after_the_command_ran(serve, arena):
    s = serve()
    add = b'{"jsonrpc":"2.0","method":"mq_add","params":["q1","k","v"]}'
    resp, data = call(s.port, "POST", "/mi", add)
    assert (resp.status, data, resp.getheader("Content-Length")) == (202, b"", "0")
    assert arena.size("q1") == 1  # already added when the 202 arrived


@pytest.mark.parametrize("path", ["/mi", "/mi/", "/mi/anything", "/mi?x=1"])
def test_root_and_paths_below_it_are_served(serve, path):
    s = serve()
    resp, _ = call(s.port, "POST", path, SIZE)
    assert resp.status == 200


BAD_URL_PAGE = b"<html><body>Unable to parse URL!</body></html>"
UNSUPPORTED_PAGE = b"<html><body>Unsupported HTTP request!</body></html>"


@pytest.mark.parametrize("path", ["/mifoo", "/", "/m", "/other/mi", "/MI", "//mi"])
def test_other_paths_are_opensips_400_page(serve, path):
    s = serve()
    resp, data = call(s.port, "POST", path, SIZE)
    assert (resp.status, resp.getheader("Content-Type"), data) == (400, "text/html",
                                                                  BAD_URL_PAGE)


def test_configured_root_is_used(serve):
    s = serve(root="json")
    assert call(s.port, "POST", "/json", SIZE)[0].status == 200
    assert call(s.port, "POST", "/mi", SIZE)[0].status == 400


def test_get_is_405(serve):
    s = serve()
    resp, _ = call(s.port, "GET", "/mi", None)
    assert resp.status == 405
    assert resp.getheader("Allow") == "POST"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_other_methods_are_406(serve, method):
    s = serve()
    resp, data = call(s.port, method, "/mi", SIZE)
    assert (resp.status, resp.getheader("Content-Type")) == (406, "text/html")
    if method != "HEAD":  # a reply to HEAD has no body
        assert data == UNSUPPORTED_PAGE


@pytest.mark.parametrize("method", ["post", "Post", "get", "FOO"])
def test_the_method_is_case_sensitive_and_unknown_ones_are_406(serve, method):
    # OpenSIPS compares the method exactly: "post" is not POST (406, not served)
    s = serve()
    sock = s.connect()
    sock.sendall(post("/mi", SIZE).replace(b"POST", method.encode(), 1))
    reply = read_reply(sock, bytearray())
    assert (reply.status, reply.headers["content-type"], reply.body) == (
        406, "text/html", UNSUPPORTED_PAGE)


def test_empty_body_is_400(serve):
    s = serve()
    resp, _ = call(s.port, "POST", "/mi", b"")
    assert resp.status == 400


def test_body_over_the_limit_is_413_from_the_header_alone(serve):
    s = serve(max_request=100)
    sock = s.connect()
    # only the head is sent: the answer must not wait for the 101 body bytes
    sock.sendall(post("/mi", b"x" * 101)[: -101])
    reply = read_reply(sock, bytearray())
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert closed_by_peer(sock)


def test_body_at_the_limit_is_served(serve):
    s = serve(max_request=len(SIZE))
    assert call(s.port, "POST", "/mi", SIZE)[0].status == 200


def auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize("headers", [{}, auth_header("admin", "wrong"),
                                     auth_header("adm", "secret"), {"Authorization": "Bearer x"},
                                     {"Authorization": "Basic !!!"}])
def test_basic_auth_refusal_is_401_with_realm(serve, headers):
    s = serve(auth=("admin", "secret"))
    resp, _ = call(s.port, "POST", "/mi", SIZE, headers)
    assert resp.status == 401
    assert resp.getheader("WWW-Authenticate") == 'Basic realm="OpenSIPS MI"'


def test_basic_auth_with_the_secret_is_served(serve, core_handle):
    s = serve(auth=("admin", "secret"))
    resp, data = call(s.port, "POST", "/mi", SIZE, auth_header("admin", "secret"))
    assert (resp.status, data) == (200, core_handle(SIZE))


def curl(*args: str) -> tuple[int, bytes]:
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
                         capture_output=True, timeout=30, check=True).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


@pytest.mark.parametrize("content_type", [[], ["-H", "Content-Type: application/json"]])
def test_curl_with_and_without_json_content_type(serve, core_handle, content_type):
    s = serve()
    code, body = curl(f"http://127.0.0.1:{s.port}/mi", *content_type, "-d", SIZE.decode())
    assert (code, body) == (200, core_handle(SIZE))


def test_curl_large_body_goes_through_expect_100_continue(serve, arena):
    s = serve()
    value = "v" * 3000  # curl sends Expect: 100-continue above 1024 bytes
    add = json.dumps({"jsonrpc": "2.0", "method": "mq_add", "params": ["q1", "k", value], "id": 1})
    code, body = curl(f"http://127.0.0.1:{s.port}/mi", "-d", add)
    assert (code, json.loads(body)["result"]) == (200, "OK")
    assert arena.snapshot("q1") == [("k", value)]


def test_curl_basic_auth(serve):
    s = serve(auth=("admin", "secret"))
    url = f"http://127.0.0.1:{s.port}/mi"
    assert curl(url, "-d", SIZE.decode())[0] == 401
    assert curl(url, "-u", "admin:secret", "-d", SIZE.decode())[0] == 200


@pytest.mark.parametrize("method,target", [(b"POST", b"http://[bad/mi"), (b"CONNECT", b"x:80")])
def test_request_target_that_is_not_a_url_is_400_and_closed(serve, method, target):
    # The URL cannot be parsed while the head is read: answered 400 at once (it was left
    # unanswered until the request timeout closed the connection).
    s = serve()
    sock = s.connect()
    sock.sendall(method + b" " + target + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    reply = read_reply(sock, bytearray())
    assert reply.status == 400
    assert closed_by_peer(sock)


def test_a_json_integer_beyond_int_digits_is_clamped_not_a_parse_error(serve):
    s = serve()
    body = b'{"jsonrpc":"2.0","method":"mq_get_size","params":["q1"],"id":-%s}' % (b"9" * 5000)
    resp, data = call(s.port, "POST", "/mi", body, {"Content-Type": "application/json"})
    assert resp.status == 200
    assert json.loads(data) == {"jsonrpc": "2.0", "result": {"Queue": {"name": "q1",
                                                                        "size": 0}},
                                "id": -2147483648}
