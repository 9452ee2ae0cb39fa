"""Every Python example in README.md and docs/ (subdirectories included) runs as written, in a
fresh directory on the default SQLite database, and prints exactly the ```text block that follows
it, if any. The changelog page shows CHANGELOG.md, which has a section for this version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import abadges

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def examples(page: Path) -> list[tuple[str, str | None]]:
    """The page's python blocks, each with the text block right after it (or None)."""
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]
    found = []
    for n, (language, code) in enumerate(blocks):
        if language == "python":
            after = blocks[n + 1] if n + 1 < len(blocks) else ("", "")
            found.append((code, after[1] if after[0] == "text" else None))
    return found


def page_id(page: Path) -> str:
    """README.md, or the page's path under docs/, such as integrations/starlette.md."""
    return page.name if page.parent == ROOT else page.relative_to(DOCS).as_posix()


CASES = [
    pytest.param(code, output, id=f"{page_id(page)}-{n}")
    for page in PAGES
    for n, (code, output) in enumerate(examples(page), start=1)
]


def run(code: str, directory: Path) -> subprocess.CompletedProcess[str]:
    (directory / "example.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABADGES_")}
    # The session's stream of notices (tests/conftest.py), which it deletes at its end.
    env["ABADGES_NOTICES_STREAM"] = os.environ["ABADGES_NOTICES_STREAM"]
    return subprocess.run(
        [sys.executable, "example.py"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("code", "output"), CASES)
def test_example_runs_as_written(code: str, output: str | None, tmp_path: Path) -> None:
    result = run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if output is not None:
        assert result.stdout == output


def test_quickstart_second_run_congratulates_no_one(tmp_path: Path) -> None:
    [(code, output), *_] = examples(ROOT / "README.md")
    assert output is not None
    assert run(code, tmp_path).stdout == output
    # The awards are in ./abadges.sqlite3 now: the second run announces nothing new.
    second = run(code, tmp_path)
    assert second.stdout == "".join(output.splitlines(keepends=True)[2:])
    assert (tmp_path / "abadges.sqlite3").exists()


def test_the_changelog_has_a_section_for_this_version() -> None:
    # docs/changelog.md includes CHANGELOG.md (pymdownx.snippets), so the site shows this one.
    assert (DOCS / "changelog.md").read_text() == '--8<-- "CHANGELOG.md"\n'
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "\n## [Unreleased]\n" in changelog
    assert f"\n## [{abadges.__version__}] - " in changelog, abadges.__version__
