"""Real servers for the monitoring tests, each in the test's private directory."""

from __future__ import annotations

import base64
import http.client
from typing import Any

import pytest

from tests.serverproc import Server, free_port


class AuthServer(Server):
    """A server whose MI asks for credentials: this client sends them on every MI call."""

    def __init__(self, *args: Any, auth: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        self.auth_header = {"Authorization": f"Basic {token}"}

    def post(self, body: bytes, headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
        return super().post(body, {**self.auth_header, **(headers or {})}, timeout)


@pytest.fixture
def servers(short_tmp):
    """A factory of started servers; `http` is merged into the HTTP section."""
    made: list[Server] = []

    def make(http: dict[str, Any] | None = None, **kwargs: Any) -> Server:
        port = free_port()
        extra = kwargs.pop("extra", {})
        extra["http"] = {"listen": f"127.0.0.1:{port}", "workers": kwargs.get("workers", 1),
                         **(http or {})}
        kwargs.setdefault("workers", 1)
        directory = short_tmp / f"s{len(made)}"
        directory.mkdir()
        auth = (http or {}).get("auth")
        server = (AuthServer(directory, port, extra=extra, auth=auth, **kwargs) if auth
                  else Server(directory, port, extra=extra, **kwargs))
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.kill()


def get(port: int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
