"""docs/commands.md and docs/wire.md show compat transcript cases: each example block is
exactly its case (which the compat tests replay over HTTP, the FIFO and the core), and
every command the server accepts is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compat.transcripts import load_all
from mi_server.mi.commands import COMMANDS
from tests.docs.transcript_blocks import render

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- test: transcript (\S+) (\S+) -->\n```text\n(.*?)```", re.S)
CASES = {(case.source.split(":")[0], case.name): case for case in load_all()}
SHOWN = [(doc.name, *m.groups()) for doc in sorted((ROOT / "docs").glob("*.md"))
         for m in BLOCK.finditer(doc.read_text(encoding="utf-8"))]


def test_the_documents_show_transcript_cases() -> None:
    assert len([s for s in SHOWN if s[0] == "commands.md"]) >= 60


@pytest.mark.parametrize(("doc", "file", "name", "text"), SHOWN,
                         ids=[f"{s[0]}:{s[2]}" for s in SHOWN])
def test_each_example_is_its_transcript_case(doc: str, file: str, name: str,
                                             text: str) -> None:
    assert (file, name) in CASES, f"{doc}: no case {name} in compat/transcripts/{file}"
    assert text == render(CASES[(file, name)])


def test_every_accepted_command_is_documented() -> None:
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    names = [name for command in COMMANDS for name in (command.name, *command.aliases)]
    assert "mq_add" in names and "mqueue:fetch" in names
    for name in names:
        assert f"`{name}`" in text, f"{name} is not in docs/commands.md"


def test_every_test_and_case_the_documents_name_exists() -> None:
    """`tests/PATH.py::test_name` (and a bare `test_name` after it in the same cell) and
    `case_name` after the word "case(s)" name real tests and transcript cases."""
    case_names = {name for _, name in CASES}
    missing = []
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        for line in doc.read_text(encoding="utf-8").splitlines():
            last_file = None
            for m in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`(test_\w+)`", line):
                if m.group(1):
                    last_file = ROOT / m.group(1)
                    if not last_file.is_file():
                        missing.append(m.group(1))
                        continue
                name = m.group(2) or m.group(3)
                if name and last_file is not None and not re.search(
                        rf"^def {name}\(", last_file.read_text(), re.M):
                    missing.append(f"{last_file.relative_to(ROOT)}::{name}")
            for cell in re.findall(r"cases? ((?:`[\w*]+`(?:, | and )?)+)", line):
                for name in re.findall(r"`([\w*]+)`", cell):
                    pattern = re.compile(name.replace("*", r"\w*") + r"\Z")
                    if not any(pattern.match(n) for n in case_names):
                        missing.append(f"case {name}")
    assert missing == []
