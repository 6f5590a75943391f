"""A real server with the web page, and a real headless Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.serverproc import Server, free_port

CHROMIUM = "/usr/bin/chromium"
# As this machine's network is closed: no background fetches, no QUIC, no first-run.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
HOSTILE = "<script>alert('q')</script>"
QUEUES = ["name=web_q;size=10", {"name": HOSTILE, "size": 0, "addmode": 2},
          "name=web_other"]


def start_server(http: dict | None = None, wait: bool = True,
                 env: dict[str, str] | None = None) -> Server:
    """A server with QUEUES; `http` keys are added to its http section."""
    workdir = Path(tempfile.mkdtemp(prefix="mqw", dir="/tmp"))
    srv = Server(workdir, free_port(), queues=QUEUES, workers=1, env=env)
    srv.config["http"].update(http or {})
    return srv.start() if wait else srv


def stop_server(srv: Server) -> None:
    rc = srv.stop()
    log = srv.stderr()
    srv.kill()
    shutil.rmtree(srv.dir, ignore_errors=True)
    assert rc == 0, log


@pytest.fixture(scope="module")
def server():
    srv = start_server()
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page whose dialogs, console errors and page errors are recorded: a script that
    ran where it must not would show up in one of them."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def page(browser):
    watched = Watched(browser)
    yield watched
    watched.close()
    assert watched.dialogs == [], "a script ran from a queue name, key or value"
