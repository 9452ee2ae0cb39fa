"""The README's quickstart runs as written and prints what the README says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def quickstart() -> tuple[str, str]:
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    output = re.search(r"```text\n(.*?)```", section, re.S)
    assert code and output, "the Quickstart section needs a python block and a text block"
    return code.group(1), output.group(1)


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    code, expected = quickstart()
    (tmp_path / "quickstart.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABADGES_")}
    for run in range(2):
        result = subprocess.run(
            [sys.executable, "quickstart.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        if run == 0:
            assert result.stdout == expected
        else:
            # The second run finds the awards already held: no congratulations.
            assert result.stdout == "".join(expected.splitlines(keepends=True)[2:])
    assert (tmp_path / "abadges.sqlite3").exists()
