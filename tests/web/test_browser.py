"""The web page in a real browser: what it shows, that it updates live, the forms, and
that neither hostile names nor other sites can make it do what it must not."""

from __future__ import annotations

import http.server
import json
import threading
import time
from urllib.request import urlopen

import pytest

from tests.web.conftest import HOSTILE

pytestmark = pytest.mark.timeout(120)


def base(srv) -> str:
    return f"http://127.0.0.1:{srv.port}/html"


def sizes_shown(page) -> dict[str, int]:
    return page.page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#queues tr[data-queue]')]
             .map(tr => [tr.dataset.queue, Number(tr.querySelector('.size').textContent)]))""")


def test_overview_shows_every_queue_with_the_sizes_the_mi_reports(server, page):
    server.mi("mq_add", ["web_q", "k1", "v1"])
    server.mi("mq_add", ["web_q", "k2", "v2"])
    page.page.goto(base(server) + "/")
    expected = {q["name"]: q["size"] for q in server.mi("mq_get_sizes")["Queue"]}
    assert sizes_shown(page) == expected
    assert expected["web_q"] >= 2
    # the hostile queue name is shown as text, not run
    assert page.page.locator("#queues th.name", has_text=HOSTILE).count() == 1
    assert "running since" in page.page.text_content("#server")
    assert page.errors == []


def test_size_and_chart_change_without_a_reload(server, page):
    page.page.goto(base(server) + "/")
    page.page.evaluate("window.__notReloaded = true")
    row = page.page.locator('#queues tr[data-queue="web_other"]')
    before = int(row.locator(".size").text_content())
    page.page.wait_for_function(  # the first poll drew one point
        "() => document.querySelector('tr[data-queue=\"web_other\"] polyline')"
        ".getAttribute('points') !== ''", timeout=10000)
    for n in range(3):
        server.mi("mq_add", ["web_other", f"k{n}", "v"])
    page.page.wait_for_function(
        f"() => Number(document.querySelector('tr[data-queue=\"web_other\"] .size')"
        f".textContent) === {before + 3}", timeout=10000)
    # the chart's last point is higher than its first (y grows downwards)
    page.page.wait_for_function(
        """() => { const p = document.querySelector('tr[data-queue="web_other"] polyline')
                     .getAttribute('points').trim().split(' ').map(s => Number(s.split(',')[1]));
                   return p.length >= 2 && p[p.length - 1] < p[0]; }""", timeout=10000)
    assert page.page.evaluate("window.__notReloaded") is True
    assert page.errors == []


def test_the_oldest_items_age_is_the_statistic_the_mi_reports(server, page):
    """The page's "Oldest item" column is get_statistics' mqueue:<q>_oldest_age, at load
    and on the live updates."""
    server.mi("mq_fetch", {"name": "web_other", "limit": 1000})
    page.page.goto(base(server) + "/")
    age = page.page.locator('#queues tr[data-queue="web_other"] .oldest_age')
    assert age.text_content() == "0 s"  # an empty queue: nothing has waited
    server.mi("mq_add", ["web_other", "old", "v"])
    time.sleep(2.2)
    stat = server.mi("get_statistics", [["web_other_oldest_age"]])
    assert list(stat) == ["mqueue:web_other_oldest_age"] and stat[
        "mqueue:web_other_oldest_age"] >= 2
    page.page.wait_for_function(  # the live update, without a reload
        "() => parseInt(document.querySelector("
        "'tr[data-queue=\"web_other\"] .oldest_age').textContent) >= 2", timeout=10000)
    page.page.goto(base(server) + "/")
    shown = int(age.text_content().removesuffix(" s"))
    now = server.mi("get_statistics", [["web_other_oldest_age"]])["mqueue:web_other_oldest_age"]
    assert stat["mqueue:web_other_oldest_age"] <= shown <= now
    assert page.errors == []


def test_a_command_with_side_effects_runs_from_its_form(server, page):
    before = server.mi("mq_get_size", ["web_q"])["Queue"]["size"]
    page.page.goto(base(server) + "/mi/mq_add")
    page.page.fill("#arg", json.dumps(["web_q", "from-the-form", "a value"]))
    page.page.click("button[type=submit]")
    assert page.page.text_content("#result").strip() == '"OK"'
    assert server.mi("mq_get_size", ["web_q"])["Queue"]["size"] == before + 1
    assert page.errors == []


def test_a_hostile_key_and_value_are_shown_as_text(server, page):
    key, value = "<img src=x onerror=alert('k')>", "<script>alert('v')</script>"
    server.mi("mq_add", [HOSTILE, key, value])
    page.page.goto(base(server) + "/mi/mq_fetch")
    page.page.fill("#arg", json.dumps([HOSTILE]))
    page.page.click("button[type=submit]")
    shown = json.loads(page.page.text_content("#result"))
    assert shown == {"Item": {"key": key, "value": value}}
    assert page.page.locator("#result img").count() == 0
    assert page.errors == []


def test_the_commands_list_has_every_command_with_its_help(server, page):
    page.page.goto(base(server) + "/mi/")
    names = page.page.eval_on_selector_all(".commands a", "els => els.map(e => e.textContent)")
    which = server.mi("which")
    aliases = {"mqueue:get_sizes", "mqueue:get_size", "mqueue:fetch"}
    assert names == [n for n in which if n not in aliases]
    page.page.goto(base(server) + "/mi/mq_fetch")
    assert "Parameters" in page.page.content()
    assert page.page.locator(".recipes li").all_text_contents() == ["name", "name, limit"]


class _EvilSite:
    """Another origin (another port) whose page posts the web page's own form to our
    server with a token it managed to obtain: only the origin check stands in the way."""

    def __init__(self, target: str, token: str) -> None:
        form = (f'<form id="f" method="post" action="{target}">'
                f'<input name="arg" value=\'["web_q"]\'>'
                f'<input name="token" value="{token}"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(form)))
                self.end_headers()
                self.wfile.write(form)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Page)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_same_post_from_another_origin_is_refused(server, page):
    server.mi("mq_add", ["web_q", "keep", "me"])
    before = server.mi("mq_get_size", ["web_q"])["Queue"]["size"]
    html = urlopen(base(server) + "/mi/mq_fetch").read().decode()
    token = html.split('name="token" value="', 1)[1].split('"', 1)[0]
    evil = _EvilSite(base(server) + "/mi/mq_fetch", token)
    try:
        with page.page.expect_response(base(server) + "/mi/mq_fetch") as answer:
            page.page.goto(evil.url)
        assert answer.value.status == 403
    finally:
        evil.close()
    time.sleep(0.2)
    assert server.mi("mq_get_size", ["web_q"])["Queue"]["size"] == before


def test_the_overview_fits_a_phone_screen(server, browser):
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone.goto(base(server) + "/")
        # the page itself never scrolls sideways: only the queue table's own box does
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        assert phone.locator("#queues").is_visible()
    finally:
        phone.close()
