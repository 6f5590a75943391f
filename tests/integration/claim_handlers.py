"""Consumer handlers for the at-least-once tests, imported by the servers the tests start
(`tests.integration.claim_handlers:record`), steered by files in $MQ_CLAIM_DIR:

- every item handled is appended to handled.jsonl as {"key", "value", "pid", "t"};
- a key starting with "block" blocks (never returns) while the file `block` exists,
  after writing its pid to `blocked`;
- a key starting with "slow" takes 0.6 s, after writing its key to `slow-started`;
- a key starting with "fail" fails (raises) the first `fail-count` times (default 1) it is
  seen, each failure appended to failed.jsonl."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _append(path: Path, record: dict) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write on O_APPEND: lines never interleave
    finally:
        os.close(fd)


def record(key: str, value: str) -> None:
    where = Path(os.environ["MQ_CLAIM_DIR"])
    if key.startswith("block") and (where / "block").exists():
        (where / "blocked").write_text(str(os.getpid()))
        while True:
            time.sleep(60)
    if key.startswith("slow"):
        (where / "slow-started").write_text(key)
        time.sleep(0.6)
    if key.startswith("fail"):
        failed = where / "failed.jsonl"
        seen = failed.read_text().count(f'"{key}"') if failed.exists() else 0
        limit = int((where / "fail-count").read_text()) if (where / "fail-count").exists() else 1
        if seen < limit:
            _append(failed, {"key": key, "pid": os.getpid(), "t": time.time()})
            raise RuntimeError(f"failing {key} on purpose")
    _append(where / "handled.jsonl", {"key": key, "value": value, "pid": os.getpid(),
                                      "t": time.time()})
