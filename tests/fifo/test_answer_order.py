"""The listener's order of work per request (mi_fifo.listener, answer), in process.

A command with side effects runs only after its reply FIFO is open; a reply that needs
none is made first so the open and the write follow each other at once (the client is
then woken once, not twice); when the client had not opened its end yet, that reply is
made again after the wait.  Recorded with stand-ins for the MI core and the reply side."""

from __future__ import annotations

import pytest

import mi_fifo.listener as listener
from mi_fifo.framer import UNPARSED
from mi_fifo.replyfifo import NO_WAIT, NoReader, ReplyError
from mi_server.config import FifoConfig

STAGED = object()  # what a stand-in stage returns for a command with side effects


@pytest.fixture
def record(monkeypatch, tmp_path):
    log: list[str] = []
    readers = {"ready": True}  # False: the first NO_WAIT open finds no reader
    fail = {"open": False}

    def open_reply(prefix, name, schedule=None, refuse=None):
        if fail["open"]:
            log.append("open failed")
            raise ReplyError("gone")
        if schedule is NO_WAIT and not readers["ready"]:
            log.append("open: no reader yet")
            raise NoReader("no reader")
        log.append("open")
        return 99

    monkeypatch.setattr(listener, "open_reply", open_reply)
    monkeypatch.setattr(listener, "write_reply", lambda fd, data: log.append(f"write {data!r}"))

    def stage(value):
        log.append(f"stage {value}")
        return STAGED if value == "fetch" else b"size " + str(len(log)).encode()

    def finish(work):
        assert work is STAGED
        log.append("finish")
        return b"item"

    def handle(body):
        log.append("handle")
        return b"raw"

    cfg = FifoConfig(path=tmp_path / "f", reply_dir=tmp_path)
    lst = listener._Listener(cfg, handle, None, stage, finish)
    return lst, log, readers, fail


def test_read_only_reply_is_made_before_the_open(record):
    lst, log, _, _ = record
    lst.answer("r", b"{}", None, "size")
    assert log == ["stage size", "open", "write b'size 1'"]


def test_side_effects_run_only_after_the_open(record):
    lst, log, _, _ = record
    lst.answer("r", b"{}", None, "fetch")
    assert log == ["stage fetch", "open", "finish", "write b'item'"]


def test_side_effects_do_not_run_when_the_open_fails(record):
    lst, log, _, fail = record
    fail["open"] = True
    lst.answer("r", b"{}", None, "fetch")
    assert log == ["stage fetch", "open failed"]


def test_a_ready_reply_is_made_again_after_waiting_for_the_reader(record):
    lst, log, readers, _ = record
    readers["ready"] = False
    lst.answer("r", b"{}", None, "size")
    assert log == ["stage size", "open: no reader yet", "open", "stage size",
                   "write b'size 4'"]


def test_undecoded_requests_run_after_the_open(record):
    lst, log, _, _ = record
    lst.answer("r", b"{}", None, UNPARSED)
    assert log == ["open", "handle", "write b'raw'"]


def test_fixed_replies_and_nameless_requests(record):
    lst, log, _, _ = record
    lst.answer("r", None, b"parse error")
    lst.answer("", b"{}", None, "fetch")  # `::{...}`: run, nobody to answer
    assert log == ["open", "write b'parse error'", "stage fetch", "finish"]
