"""docs/configuration.md: every key the validator knows is documented, and every row of
its "Every mistake" table is the validator's exact line for that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mi_server import config
from mi_server.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()


def mistake_rows() -> list[tuple[str, str]]:
    table = DOC.split("<!-- test: config-errors -->\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:  # after the header and the |---| line
        match = re.fullmatch(r"\| `(.*)` \| `(.*)` \|", line)
        assert match, f"not a row of the table: {line!r}"
        rows.append((match.group(1), match.group(2)))
    return rows


ROWS = mistake_rows()


def test_the_table_has_every_mistake_row() -> None:
    assert len(ROWS) >= 70


@pytest.mark.parametrize(("text", "line"), ROWS, ids=[text for text, _ in ROWS])
def test_each_documented_mistake_says_what_the_doc_shows(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_load(text), "server.yaml", Path("/etc/mqueue-mi"))
    assert caught.value.problems == [line]


def test_every_top_level_key_is_documented() -> None:
    section = DOC.split("## Top level", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    assert sorted(documented) == sorted(config.TOP_LEVEL_KEYS)


@pytest.mark.parametrize("section", ["http", "fifo", "datagram", "consumers", "engine"])
def test_every_key_of_a_section_is_documented(section: str) -> None:
    """The keys each section's parser accepts (read from config.py) appear in its table."""
    source = (ROOT / "mi_server" / "config.py").read_text()
    where = "consumers entry" if section == "consumers" else section
    accepted = re.search(rf'self\.known_keys\((?:"{where}"|where), \w+, \(([^)]*)\)\)',
                         source[source.index(f"def {section}(self"):])
    assert accepted, section
    keys = re.findall(r'"([a-z_]+)"', accepted.group(1))
    text = DOC.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    for key in keys:
        assert f"`{key}`" in text, f"{section}.{key} is not in docs/configuration.md"


def test_the_documented_defaults_are_the_code_s() -> None:
    http, fifo = config.HttpConfig(), config.FifoConfig()
    consumer, engine = config.ConsumerConfig(queue="q", handler="h"), config.EngineConfig()
    expected = {
        "`listen` | `127.0.0.1:8888`": f"{http.host}:{http.port}" == "127.0.0.1:8888",
        "`root` | `mi`": http.root == "mi",
        "`workers` | `2`": http.workers == 2,
        "`max_request` | `64K`": http.max_request == fifo.max_request == 64 * 1024,
        "`path` | `/tmp/opensips_fifo`": str(fifo.path) == "/tmp/opensips_fifo",
        '`mode` | `"0660"`': fifo.mode == 0o660,
        "`reply_dir` | `/tmp/`": str(fifo.reply_dir) == "/tmp",
        "`idle_timeout` | `1.0`": fifo.idle_timeout == 1.0,
        "`processes` | `1`": consumer.processes == 1,
        "`interval` | `0.1`": consumer.interval == 0.1,
        "`batch` | `100`": consumer.batch == 100,
        "`backend` | `shm`": engine.backend == "shm",
        "`url` | `redis://127.0.0.1:6379/0`": engine.url == "redis://127.0.0.1:6379/0",
        "`prefix` | `mqueue-mi`": engine.prefix == "mqueue-mi",
        "`shm_size` | `64M`": config.DEFAULT_SHM_SIZE == 64 * 1024 * 1024,
    }
    for row, true in expected.items():
        assert f"| {row} |" in DOC, row
        assert true, row


def test_the_yaml_examples_are_valid_configurations() -> None:
    """The first example is a whole file; each later one is a section of it."""
    first, *sections = [yaml.safe_load(block)
                        for block in re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)]
    assert sections
    for section in [{}, *sections]:
        parse_config({**first, **section}, "example.yaml", ROOT / "examples")
