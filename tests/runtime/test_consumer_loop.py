"""The consumer loop in a real forked process, over a list standing in for the engine."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mi_server.runtime.consumers import (
    HandlerError,
    describe_item,
    resolve_handler,
    run_consumer,
)
from mi_server.runtime.logsetup import setup_logging
from tests.serverproc import wait_for

WAIT = 10.0


class ListEngine:
    """fetch_many/add over a plain list: enough for the consumer loop."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = list(items)

    def fetch_many(self, queue: str, limit: int) -> list[tuple[str, str]]:
        out = self.items[:limit]
        del self.items[:limit]
        return out

    def add(self, queue: str, key: str, value: str) -> None:
        self.items.append((key, value))


_forked: list[int] = []


@pytest.fixture(autouse=True)
def _no_child_left_behind():
    """A test that fails half-way must not leave its consumer running."""
    yield
    while _forked:
        pid = _forked.pop()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def fork(body: Callable[[], None], stderr: Path) -> int:
    """Run `body` in a child whose stderr (and log) go to `stderr`; exit 0 unless it raises."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 2)
            sys.stderr = os.fdopen(2, "w", buffering=1)  # pytest replaced sys.stderr
            setup_logging("info")
            body()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _forked.append(pid)
    return pid


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def stop(pid: int) -> int:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("consumer did not stop on SIGTERM")


def test_a_failing_handler_is_logged_with_the_item_and_the_consumer_goes_on(tmp_path,
                                                                            monkeypatch):
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    monkeypatch.setenv("MQ_EXAMPLE_FILE", str(out))
    handler = resolve_handler("mi_server.runtime.example_handlers:fail_on_bad", "q")
    engine = ListEngine([("a", "1"), ("bad1", "x" * 1000), ("c", "3")])
    pid = fork(lambda: run_consumer(engine, "q", handler, 0.05, 2, "consumer q #1"), err)
    wait_for(lambda: len(lines(out)) == 2, WAIT, "two handled items")
    assert stop(pid) == 0
    assert [json.loads(line)["key"] for line in lines(out)] == ["a", "c"]
    log = err.read_text()
    assert "consumer q #1: handler failed for queue='q' key='bad1'" in log
    assert "refusing key 'bad1'" in log
    assert "x" * 1001 not in log and "x" * 200 + "..." in log  # the value is cut


def test_a_command_handler_gets_the_item_in_its_environment(tmp_path):
    out, err = tmp_path / "out.txt", tmp_path / "err.log"
    script = f'printf "%s=%s@%s\\n" "$MQ_KEY" "$MQ_VALUE" "$MQ_QUEUE" >> {shlex.quote(str(out))}'
    handler = resolve_handler(f"sh -c {shlex.quote(script)}", "jobs")
    engine = ListEngine([("k1", "v 1"), ("k2", "é'\"$x")])
    pid = fork(lambda: run_consumer(engine, "jobs", handler, 0.05, 100, "c"), err)
    wait_for(lambda: len(lines(out)) == 2, WAIT, "two handled items")
    assert stop(pid) == 0
    assert lines(out) == ["k1=v 1@jobs", "k2=é'\"$x@jobs"]


def test_a_command_exiting_non_zero_is_a_failure(tmp_path):
    err = tmp_path / "err.log"
    handler = resolve_handler("false", "q")
    engine = ListEngine([("k", "v")])
    pid = fork(lambda: run_consumer(engine, "q", handler, 0.05, 10, "c"), err)
    wait_for(lambda: "exited with status 1" in text(err), WAIT, "the failure log line")
    assert stop(pid) == 0
    assert "key='k'" in err.read_text()


def test_sigterm_finishes_the_item_in_hand_and_puts_the_rest_back(tmp_path):
    started, go, err = tmp_path / "started", tmp_path / "go", tmp_path / "err.log"
    handled, left = tmp_path / "handled", tmp_path / "left.json"

    def slow(key: str, value: str) -> None:
        started.touch()
        deadline = time.monotonic() + WAIT
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(handled, "a") as f:
            f.write(key + "\n")

    engine = ListEngine([(f"k{i}", str(i)) for i in range(5)])

    def body() -> None:
        run_consumer(engine, "q", slow, 0.05, 100, "c")
        left.write_text(json.dumps(engine.items))

    pid = fork(body, err)
    wait_for(started.exists, WAIT, "the first item to start")
    os.kill(pid, signal.SIGTERM)
    go.touch()
    deadline = time.monotonic() + WAIT
    while not os.waitpid(pid, os.WNOHANG)[0]:
        assert time.monotonic() < deadline, "consumer did not stop"
        time.sleep(0.02)
    assert lines(handled) == ["k0"]
    assert json.loads(left.read_text()) == [[f"k{i}", str(i)] for i in range(1, 5)]


def test_an_empty_queue_sleep_is_cut_short_by_sigterm(tmp_path):
    err = tmp_path / "err.log"
    ready = tmp_path / "ready"

    class Empty(ListEngine):
        def fetch_many(self, queue: str, limit: int) -> list[tuple[str, str]]:
            ready.touch()  # the loop runs: its signal handlers are in place
            return []

    def body() -> None:
        run_consumer(Empty([]), "q", lambda k, v: None, 3600.0, 10, "c")

    pid = fork(body, err)
    wait_for(ready.exists, WAIT, "the consumer to start")
    assert stop(pid) == 0  # bounded by WAIT, far below the 1 h interval


@pytest.mark.parametrize("text, message", [
    ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
    ("mi_server.runtime.example_handlers:nope", "has no function 'nope'"),
    ("/no/such/program --flag", "command not found: '/no/such/program'"),
    ("   ", "empty command"),
    ("echo 'unclosed", "No closing quotation"),
])
def test_an_unusable_handler_is_one_clear_error(text, message):
    with pytest.raises(HandlerError) as info:
        resolve_handler(text, "q1")
    assert str(info.value).startswith(f"consumer for queue 'q1': handler '{text}': ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_callable_handler_is_the_function_itself():
    from mi_server.runtime import example_handlers

    assert resolve_handler("mi_server.runtime.example_handlers:append_to_file", "q") is \
        example_handlers.append_to_file


def test_describe_item_cuts_long_values():
    assert describe_item("q", "k", "v") == "queue='q' key='k' value='v'"
    assert describe_item("q", "k", "y" * 500).endswith("y" * 200 + "...'")


RECORDER = """
import json, os, sys
out = os.environ["RECORD_TO"]
record = {"argv": sys.argv[1:], "stdin": sys.stdin.buffer.read().decode(),
          "env": [os.environ.get(k) for k in ("MQ_QUEUE", "MQ_KEY", "MQ_VALUE")]}
with open(out, "a") as f:
    f.write(json.dumps(record) + "\\n")
"""


def test_a_command_handler_gets_the_value_on_stdin_and_no_shell_runs_it(tmp_path,
                                                                      monkeypatch):
    out, err, script = tmp_path / "out.jsonl", tmp_path / "err.log", tmp_path / "rec.py"
    script.write_text(RECORDER)
    monkeypatch.setenv("RECORD_TO", str(out))
    # shell syntax in the command line stays literal words: nothing expands or redirects
    handler = resolve_handler(f"{sys.executable} {script} '$MQ_VALUE' \"$HOME\" '>' x* |",
                              "jobs")
    value = "line 1\nline 2 é $HOME"
    engine = ListEngine([("k1", value), ("k2", "")])
    pid = fork(lambda: run_consumer(engine, "jobs", handler, 0.05, 100, "c"), err)
    wait_for(lambda: len(lines(out)) == 2, WAIT, "two handled items")
    assert stop(pid) == 0
    first, second = (json.loads(line) for line in lines(out))
    assert first == {"argv": ["$MQ_VALUE", "$HOME", ">", "x*", "|"], "stdin": value,
                     "env": ["jobs", "k1", value]}
    assert second["stdin"] == "" and second["env"] == ["jobs", "k2", ""]
    assert not (tmp_path / "x").exists()


def test_a_command_that_does_not_read_its_stdin_is_not_a_failure(tmp_path):
    out, err = tmp_path / "out.txt", tmp_path / "err.log"
    handler = resolve_handler(f"touch {shlex.quote(str(out))}", "q")
    engine = ListEngine([("k", "v" * 100_000)])  # more than a pipe holds
    pid = fork(lambda: run_consumer(engine, "q", handler, 0.05, 10, "c"), err)
    wait_for(out.exists, WAIT, "the command to run")
    time.sleep(0.2)
    assert stop(pid) == 0
    assert "handler failed" not in text(err)


@pytest.mark.parametrize(("size", "in_env"), [(131062, True), (131063, False),
                                               (1_000_000, False)])
def test_a_value_too_long_for_the_environment_is_on_stdin_only(tmp_path, monkeypatch,
                                                               size, in_env):
    out, err, script = tmp_path / "out.jsonl", tmp_path / "err.log", tmp_path / "rec.py"
    script.write_text(RECORDER)
    monkeypatch.setenv("RECORD_TO", str(out))
    monkeypatch.setenv("MQ_VALUE", "inherited")  # never leaks through to the command
    handler = resolve_handler(f"{sys.executable} {script}", "q")
    value = "v" * size
    engine = ListEngine([("k", value)])
    pid = fork(lambda: run_consumer(engine, "q", handler, 0.05, 10, "c"), err)
    wait_for(lambda: lines(out), WAIT, "the command to run")
    assert stop(pid) == 0
    record = json.loads(lines(out)[0])
    assert record["stdin"] == value
    assert record["env"] == ["q", "k", value if in_env else None]
