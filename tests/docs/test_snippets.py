"""Every shell and Python snippet of README.md and docs/*.md runs as shown.

Each ```sh / ```bash / ```python block carries, on the line before it, one marker:

- `<!-- test: run -->`: run here against a real server started for that document from
  examples/default.yaml, in document order (a document's snippets share its server, so a
  later one sees what an earlier one added). Before running, and in the expected output,
  the defaults are replaced by the test's own, and nothing else is: the port `8888` by a
  free port, `/tmp/opensips_fifo` by a FIFO in the test's directory, `examples/default.yaml`
  by the test's copy of it. Shell blocks run with `bash -e`, Python blocks with this
  interpreter, both with this interpreter's bin directory first in PATH (opensips-cli).
  When the next block is ```text after `<!-- test: output -->`, the snippet's stdout must be
  exactly that text.
- `<!-- test: pinned tests/PATH.py::test_name -->`: a named test runs what the snippet
  does (one that cannot run as written here, such as a server in the foreground); the test
  must exist.
- `<!-- test: skip (reason) -->`: not run, for the reason given (root, systemd, the test
  suite itself, signatures that are not code).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serverproc import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!-- test: (run|output|pinned (\S+)|skip \((.+)\)) -->")
START_TIMEOUT = 20.0


@dataclass
class Snippet:
    document: Path
    line: int
    language: str  # "sh" or "python"
    code: str
    marker: str | None  # "run", "pinned", "skip" or None (unmarked)
    detail: str | None  # the pinned test, or the reason to skip
    output: str | None  # the expected stdout, for "run"

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def snippets(document: Path) -> list[Snippet]:
    text = document.read_text(encoding="utf-8")
    blocks = list(FENCE.finditer(text))
    found = []
    for index, block in enumerate(blocks):
        language = CODE_LANGUAGES.get(block.group(1))
        if language is None:
            continue
        marker = _marker_before(text, block.start())
        kind = detail = output = None
        if marker is not None:
            kind = marker.group(1).split()[0]
            detail = marker.group(2) or marker.group(3)
        if kind == "run" and index + 1 < len(blocks):
            after = blocks[index + 1]
            expected = _marker_before(text, after.start())
            between = text[block.end():after.start()]
            if expected is not None and expected.group(1) == "output" and \
                    between.strip() == expected.group(0):
                output = after.group(2)
        found.append(Snippet(document, text.count("\n", 0, block.start()) + 1, language,
                             block.group(2), kind, detail, output))
    return found


def _marker_before(text: str, start: int) -> re.Match | None:
    """The marker on the last non-blank line before `start`, if that line is one."""
    lines = text[:start].rstrip("\n").rsplit("\n", 1)
    return MARKER.fullmatch(lines[-1].strip()) if lines else None


ALL = [s for document in DOCUMENTS for s in snippets(document)]
RUN = [s for s in ALL if s.marker == "run"]
RUN_DOCUMENTS = sorted({s.document for s in RUN})


def test_every_code_snippet_is_marked() -> None:
    unmarked = [s.where for s in ALL if s.marker not in ("run", "pinned", "skip")]
    assert unmarked == [], "mark each with <!-- test: run|pinned ...|skip (reason) -->"
    assert len(RUN) >= 5


def test_every_pinned_snippet_names_a_test_that_exists() -> None:
    for snippet in (s for s in ALL if s.marker == "pinned"):
        path, _, name = (snippet.detail or "").partition("::")
        assert name, f"{snippet.where}: pinned needs tests/FILE.py::test_name"
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), \
            f"{snippet.where}: {snippet.detail} does not exist"


def test_every_skip_says_why() -> None:
    for snippet in (s for s in ALL if s.marker == "skip"):
        assert len(snippet.detail or "") >= 10, f"{snippet.where}: say why it is not run"


# -- running them ------------------------------------------------------------------------


class DocServer:
    """The server of examples/default.yaml, on the test's port and FIFO."""

    def __init__(self, directory: Path, example: str = "default.yaml",
                 env: dict[str, str] | None = None) -> None:
        self.dir = directory
        self.port = free_port()
        self.fifo = directory / "opensips_fifo"
        self.example = f"examples/{example}"
        self.config = directory / example
        (directory / "var").mkdir()
        text = self.rewrite((ROOT / self.example).read_text())
        self.config.write_text(text)
        self.log = open(directory / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "mi_server", "-c", str(self.config)],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.answers() and (self.fifo.exists() or "\nfifo:" not in text)):
            assert self.proc.poll() is None, (directory / "server.log").read_text()
            assert time.monotonic() < deadline, "the documents' server did not start"
            time.sleep(0.05)

    def rewrite(self, text: str) -> str:
        """The documented defaults replaced by this server's (and nothing else)."""
        return (text.replace("/tmp/opensips_fifo", str(self.fifo))
                .replace(self.example, str(self.config))
                .replace("8888", str(self.port)))

    def answers(self) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/mi", method="POST",
            data=b'{"jsonrpc":"2.0","id":1,"method":"which"}')
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def doc_servers(tmp_path_factory: pytest.TempPathFactory):
    servers: dict[Path, DocServer] = {}

    def server_for(document: Path) -> DocServer:
        if document not in servers:
            servers[document] = DocServer(tmp_path_factory.mktemp(document.stem))
        return servers[document]

    yield server_for
    for server in servers.values():
        server.stop()


def run_snippet(snippet: Snippet, server: DocServer) -> subprocess.CompletedProcess[str]:
    code = server.rewrite(snippet.code)
    command = ["bash", "-e", "-c", code] if snippet.language == "sh" \
        else [sys.executable, "-c", code]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               HOME=str(server.dir))
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("document", RUN_DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_the_snippets_of_each_document_run_as_shown(document: Path, doc_servers) -> None:
    server = doc_servers(document)
    for snippet in (s for s in RUN if s.document == document):
        result = run_snippet(snippet, server)
        assert result.returncode == 0, f"{snippet.where}:\n{result.stdout}{result.stderr}"
        if snippet.output is not None:
            assert result.stdout.rstrip("\n") == server.rewrite(snippet.output).rstrip("\n"), \
                f"{snippet.where}: stdout differs from the document's output block"


def test_the_readme_start_command_serves_the_default_configuration(tmp_path: Path) -> None:
    """README "Two commands": `mi-server -c examples/default.yaml` in the foreground serves
    HTTP and the FIFO of the shipped file (here on the test's port and FIFO, in a copy)."""
    (readme_start,) = [s for s in snippets(ROOT / "README.md")
                       if s.marker == "pinned" and "start_command" in (s.detail or "")]
    assert readme_start.code.strip().endswith("&& .venv/bin/mi-server -c examples/default.yaml")
    server = DocServer(tmp_path)
    try:
        assert server.answers()
        log = (tmp_path / "server.log").read_text()
        assert "started: 3 queue(s)" in log and f"FIFO {server.fifo}" in log
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_the_consumer_example_drains_a_queue_into_the_file(tmp_path: Path) -> None:
    """docs/consumers.md: examples/consumer.yaml with MQ_EXAMPLE_FILE, fed one item by the
    snippet's curl line, appends it to the file as a JSON line."""
    import json

    (snippet,) = [s for s in snippets(ROOT / "docs" / "consumers.md")
                  if "consumer_example" in (s.detail or "")]
    assert "MQ_EXAMPLE_FILE=/tmp/mq-consumed.jsonl mi-server -c examples/consumer.yaml &" \
        in snippet.code
    (feed,) = [line for line in snippet.code.splitlines() if line.startswith("curl ")]
    consumed = tmp_path / "mq-consumed.jsonl"
    server = DocServer(tmp_path, "consumer.yaml", env={"MQ_EXAMPLE_FILE": str(consumed)})
    try:
        fed = subprocess.run(["bash", "-e", "-c", server.rewrite(feed)], capture_output=True,
                             text=True, timeout=30)
        assert fed.stdout == '{"jsonrpc":"2.0","result":"OK","id":1}'
        deadline = time.monotonic() + 30
        while not (consumed.exists() and consumed.read_text().endswith("\n")):
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        item = json.loads(consumed.read_text())
        assert (item["key"], item["value"]) == ("k1", "v1")
    finally:
        server.stop()
