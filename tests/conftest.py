"""Fixtures shared by every test area: free ports, private temporary paths, the MySQL URL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serverproc import free_port  # noqa: E402

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def short_tmp(tmp_path_factory) -> Path:
    """A short private directory: reply FIFO paths must stay under 128 bytes."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="mq", dir="/tmp"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return os.environ.get("MQ_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)
