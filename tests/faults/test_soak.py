"""The soak run (`soak.py`) is not collected with the suite and runs for minutes, so its imports
could break unnoticed: run it far enough to parse its arguments."""

from __future__ import annotations

import pathlib
import subprocess
import sys

SOAK = pathlib.Path(__file__).with_name("soak.py")


def test_the_soak_script_starts_from_any_directory(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: soak.py"), result.stdout
    assert "--events" in result.stdout
