"""Nothing in the project points outside the repository: the team's directory beside it
(NEEDLE) is named only by the benchmarks' --shared option (its help text,
benchmarks/common.py SHARED_HELP)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDLE = ".." + "/shared"  # spelled in two parts so that this file does not contain it
ALLOWED = ("benchmarks/common.py", f'"(default $MQMI_SHARED, else <repo>/{NEEDLE})")')


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    return [name for name in listed.splitlines() if (ROOT / name).is_file()]


def test_only_the_benchmarks_shared_option_mentions_dot_dot_shared() -> None:
    found = []
    for name in tracked_files():
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if NEEDLE in line and (name, line.strip()) != ALLOWED:
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []


def test_the_license_is_the_mit_license_pyproject_names() -> None:
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the mqueue-mi authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_every_optional_c_part_is_in_the_prerequisites_and_the_install() -> None:
    import re

    # the ext-modules tables' `sources = ["..."]` (tomllib is 3.11+, the project 3.10+)
    sources = re.findall(r'^sources = \["([^"]+)"\]', (ROOT / "pyproject.toml").read_text(),
                         re.M)
    assert len(sources) >= 3
    readme = (ROOT / "README.md").read_text()
    install = (ROOT / "docs" / "operations.md").read_text().split("## Run", 1)[0]
    for source in sources:
        assert f"`{source}`" in readme, f"README.md prerequisites miss {source}"
        assert f"`{source}`" in install, f"docs/operations.md Install misses {source}"
