"""A real unprivileged local user for security tests: created with useradd under a random
unique name, its commands run with setpriv (its uid, gid, no supplementary groups), and
removed with userdel afterwards."""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run argv as this user (never a shell), from /; its output is captured."""
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
             "--", *argv],
            cwd="/", capture_output=True, text=True, check=check, timeout=60)

    def python(self, code: str) -> subprocess.CompletedProcess:
        return self.run("/usr/bin/env", "python3", "-c", code)


@contextmanager
def unprivileged_user() -> Iterator[User]:
    if os.geteuid() != 0:
        pytest.skip("creating a local user needs root")
    name = f"mqatk{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", name], check=True, capture_output=True, timeout=60)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


@pytest.fixture
def attacker() -> Iterator[User]:
    with unprivileged_user() as user:
        yield user


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A sticky, world-writable directory like /tmp or /var/tmp, private to the test."""
    import shutil

    path = f"/tmp/mqshared-{uuid.uuid4().hex[:12]}"
    os.mkdir(path)
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
