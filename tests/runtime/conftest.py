"""Fixtures of the runtime tests: real servers in a private directory, test databases."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serverproc import Db, Server, free_port


@pytest.fixture
def servers(short_tmp):
    """A factory of Server objects in the test's private directory; all killed at the end."""
    made: list[Server] = []

    def make(port: int | None = None, **kwargs: Any) -> Server:
        server = Server(short_tmp, port or free_port(), **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()


@pytest.fixture(params=["sqlite", "mysql"])
def db(request, short_tmp, mysql_url):
    """The test database, SQLite (a file in the private directory) and MySQL in turn."""
    url = f"sqlite://{short_tmp}/queues.db" if request.param == "sqlite" else mysql_url
    database = Db(url)
    yield database
    database.drop_all()
