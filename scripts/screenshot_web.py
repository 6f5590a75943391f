"""Regenerate docs/images/web-overview.png: the overview page of a real server with a few
queues being filled and drained, as headless Chromium shows it.

    .venv/bin/python scripts/screenshot_web.py [--out docs/images/web-overview.png]

Needs Debian's chromium (/usr/bin/chromium) and the test extras (playwright).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import Server, free_port  # noqa: E402
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

QUEUES = ["name=orders;size=500", {"name": "cdr", "size": 0, "addmode": 0, "dbmode": 0},
          {"name": "presence", "size": 100, "addmode": 2}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/web-overview.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="mqshot", dir="/tmp"))
    srv = Server(workdir, free_port(), queues=QUEUES, workers=1).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 560})
            page.goto(f"http://127.0.0.1:{srv.port}/html/")
            for step in range(24):  # half a minute of traffic for the charts
                for n in range(step % 7 + 3):
                    srv.mi("mq_add", ["orders", f"o{step}-{n}", "{}"])
                srv.mi("mq_add", ["cdr", f"c{step}", "{}"])
                srv.mi("mq_add", ["presence", f"user{step % 5}", "online"])
                if step % 3 == 2:
                    srv.mi("mq_fetch", ["orders", 8])
                time.sleep(1.0)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        srv.stop()
        srv.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
