"""The `abadges` command, run as the installed console script against real databases and Redis."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio

from abadges import Badge, BadgeAwarded, BadgeDetail, BadgeRegistry
from abadges.testing import free_port

ABADGES = str(pathlib.Path(sys.executable).parent / "abadges")
T = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


class Points(Badge):
    slug = "points"
    levels = ["Bronze", "Silver", BadgeDetail("Gold", "Over 10,000 points")]
    events = ["points_awarded"]

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded(level=state["level"])


class Thanks(Badge):
    slug = "thanks"
    levels = [BadgeDetail("Thanked", "Someone said thanks")]
    events = ["thanked"]
    multiple = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class Answers(Badge):
    slug = "answers"
    levels = ["Answerer"]
    events = ["answered"]
    deferred = True

    def award(self, **state: Any) -> None:
        return None


BADGE_CLASSES = (Points, Thanks, Answers)
#: The module the command imports (ABADGES_BADGES=cli_badges): the same classes, registered
#: with `abadges.badges`.
BADGE_MODULE = "\n".join(
    [
        "from __future__ import annotations",
        "from typing import Any",
        "from abadges import Badge, BadgeAwarded, BadgeDetail, badges",
        *(inspect.getsource(badge_class) for badge_class in BADGE_CLASSES),
        *(f"badges.register({badge_class.__name__})" for badge_class in BADGE_CLASSES),
    ]
)


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)

    def error_line(self) -> str:
        """The one line of a user error (exit status 1), without click's "Error: "."""
        assert (self.code, self.out) == (1, ""), self
        [line] = self.err.splitlines()
        assert line.startswith("Error: "), line
        return line.removeprefix("Error: ")


@dataclasses.dataclass
class Cli:
    """Runs the installed `abadges` in `cwd`, with `env` (no ABADGES_* from outside)."""

    cwd: pathlib.Path
    env: dict[str, str]

    async def __call__(self, *args: str, **env: str) -> Result:
        done = await anyio.run_process(
            [ABADGES, *args], cwd=self.cwd, env={**self.env, **env}, check=False
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def cli(tmp_path: pathlib.Path) -> Cli:
    """The command with the badge module on PYTHONPATH, on a fresh SQLite file by default."""
    (tmp_path / "cli_badges.py").write_text(BADGE_MODULE)
    outside = ("ABADGES_", "FORCE_COLOR", "NO_COLOR", "TTY_", "COLUMNS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(outside)}
    # The session's stream of notices (tests/conftest.py), which it deletes at its end.
    env["ABADGES_NOTICES_STREAM"] = os.environ["ABADGES_NOTICES_STREAM"]
    env |= {
        "PYTHONPATH": str(tmp_path),
        "ABADGES_BADGES": "cli_badges",
        "ABADGES_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}",
    }
    return Cli(tmp_path, env)


async def award_examples(registry: BadgeRegistry) -> None:
    """ada: Bronze, Silver and two thanks; bob: Bronze. In this order, an hour apart or less."""
    for badge_class in BADGE_CLASSES:
        registry.register(badge_class)
    for event, user, when, state in [
        ("points_awarded", "ada", T, {"level": 1}),
        ("points_awarded", "bob", T + HOUR / 2, {"level": 1}),
        ("points_awarded", "ada", T + HOUR, {"level": 2}),
        ("thanked", "ada", T + 2 * HOUR, {}),
        ("thanked", "ada", T + 3 * HOUR, {}),
    ]:
        await registry.possibly_award_badge(event, user=user, force_timestamp=when, **state)


def without_ids(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "id"} for record in records]


def award_json(user: str, slug: str, level: int, at: datetime.datetime) -> dict[str, Any]:
    detail = {
        ("points", 1): ("Bronze", None),
        ("points", 2): ("Silver", None),
        ("thanks", 1): ("Thanked", "Someone said thanks"),
    }[slug, level]
    return {
        "user_id": user,
        "slug": slug,
        "level": level,
        "name": detail[0],
        "description": detail[1],
        "awarded_at": at.isoformat(),
        "source": "event",
        "granted_by": None,
        "reason": None,
        "expires_at": None,
    }


async def test_json_output_on_every_database(
    cli: Cli, registry: BadgeRegistry, database_url: str
) -> None:
    await award_examples(registry)
    cli.env["ABADGES_DATABASE_URL"] = database_url

    assert (await cli("badges", "--json")).json() == [
        {
            "slug": "points",
            "multiple": False,
            "deferred": False,
            "temporary": False,
            "replaces_lower": False,
            "expires_after": None,
            "levels": [
                {"level": 1, "name": "Bronze", "description": None, "awards": 2},
                {"level": 2, "name": "Silver", "description": None, "awards": 1},
                {"level": 3, "name": "Gold", "description": "Over 10,000 points", "awards": 0},
            ],
        },
        {
            "slug": "thanks",
            "multiple": True,
            "deferred": False,
            "temporary": False,
            "replaces_lower": False,
            "expires_after": None,
            "levels": [
                {"level": 1, "name": "Thanked", "description": "Someone said thanks", "awards": 2}
            ],
        },
        {
            "slug": "answers",
            "multiple": False,
            "deferred": True,
            "temporary": False,
            "replaces_lower": False,
            "expires_after": None,
            "levels": [{"level": 1, "name": "Answerer", "description": None, "awards": 0}],
        },
    ]

    awards = (await cli("awards", "ada", "--json")).json()
    assert without_ids(awards) == [
        award_json("ada", "thanks", 1, T + 3 * HOUR),
        award_json("ada", "thanks", 1, T + 2 * HOUR),
        award_json("ada", "points", 2, T + HOUR),
        award_json("ada", "points", 1, T),
    ]
    assert [a["id"] for a in awards] == [a.id for a in await registry.awards_for("ada")]

    page = await cli("holders", "points", "--level", "1", "--limit", "1", "--offset", "1", "--json")
    assert without_ids(page.json()) == [award_json("ada", "points", 1, T)]

    revoked = await cli("revoke", "ada", "points", "2", "--json")
    assert revoked.json() == {"user_id": "ada", "slug": "points", "level": 2, "revoked": 1}
    assert await registry.has_badge("ada", "points", 1)
    assert not await registry.has_badge("ada", "points", 2)

    # On a database that has the tables already, upgrading changes nothing.
    upgraded = (await cli("db", "upgrade", "--json")).json()
    assert upgraded == {"database_url": registry.database.url.obscure_password, "upgraded": True}
    assert await registry.badge_count("ada") == 3


async def test_upgrade_an_empty_database_then_read_it_as_text(cli: Cli) -> None:
    # No PYTHONPATH: the badge module is found in the current directory, as arq finds it.
    del cli.env["PYTHONPATH"]
    url = cli.env["ABADGES_DATABASE_URL"]

    before = await cli("db", "current")
    assert before.code == 1
    assert before.out == f"{url}: revision none (this abadges: 0007).\n"
    assert before.err == (
        f"Error: The abadges tables of {url} are not at revision 0007: run `abadges db upgrade`.\n"
    )
    missing = (await cli("awards", "ada")).error_line()
    assert "abadges db upgrade" in missing

    upgraded = await cli("db", "upgrade")
    assert (upgraded.code, upgraded.err) == (0, "")
    assert upgraded.out == f"The abadges tables of {url} are up to date.\n"
    assert (await cli("awards", "ada")).out == "id  slug  level  name  awarded_at\n"
    after = await cli("db", "current", "--json")
    assert after.json() == {"database_url": url, "current": "0007", "head": "0007"}

    registry = BadgeRegistry()
    registry.configure(database_url=url, queue="inline")
    async with registry.lifespan():
        await award_examples(registry)

    awards = await cli("awards", "ada")
    assert (awards.code, awards.err) == (0, "")
    assert awards.out == (
        "id  slug    level  name     awarded_at\n"
        "5   thanks  1      Thanked  2024-05-01T15:00:00+00:00\n"
        "4   thanks  1      Thanked  2024-05-01T14:00:00+00:00\n"
        "3   points  2      Silver   2024-05-01T13:00:00+00:00\n"
        "1   points  1      Bronze   2024-05-01T12:00:00+00:00\n"
    )
    assert (await cli("holders", "points")).out == (
        "id  user_id  level  name    awarded_at\n"
        "3   ada      2      Silver  2024-05-01T13:00:00+00:00\n"
        "2   bob      1      Bronze  2024-05-01T12:30:00+00:00\n"
        "1   ada      1      Bronze  2024-05-01T12:00:00+00:00\n"
    )
    assert (await cli("badges")).out == (
        "slug     level  name      awards  multiple  deferred\n"
        "points   1      Bronze    2       no        no\n"
        "points   2      Silver    1       no        no\n"
        "points   3      Gold      0       no        no\n"
        "thanks   1      Thanked   2       yes       no\n"
        "answers  1      Answerer  0       no        yes\n"
    )
    revoked = await cli("revoke", "ada", "thanks")
    assert revoked.out == "Revoked 2 awards of badge 'thanks' from user 'ada'.\n"
    revoked = await cli("revoke", "ada", "points", "1")
    assert revoked.out == "Revoked 1 award of badge 'points' level 1 from user 'ada'.\n"

    # On a terminal, a rich table.
    table = await cli("awards", "ada", FORCE_COLOR="1", COLUMNS="100")
    assert table.code == 0
    assert "\x1b[" in table.out
    assert re.search(r"│ 3\s+│ points │ 2\s+│ Silver\s+│ 2024-05-01T13:00:00\+00:00 │", table.out)
    assert "Bronze" not in table.out


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["holders", "nope"],
            {},
            "No badge with slug 'nope' is registered; "
            "registered slugs: ['answers', 'points', 'thanks'].",
            id="unknown-slug",
        ),
        pytest.param(
            ["revoke", "ada", "points", "4"],
            {},
            "Badge 'points' has 3 level(s); level 4 is out of range.",
            id="bad-level",
        ),
        pytest.param(
            ["holders", "points", "--level", "0"],
            {},
            "Badge 'points' has 3 level(s); level 0 is out of range.",
            id="bad-level-option",
        ),
        pytest.param(
            ["--badges", "cli_badges,missing_badges", "badges"],
            {},
            "--badges names module 'missing_badges', which cannot be imported: "
            "No module named 'missing_badges'.",
            id="missing-module",
        ),
        pytest.param(
            ["badges"],
            {"ABADGES_BADGES": "broken_badges"},
            "The badge module 'broken_badges' (from ABADGES_BADGES) failed to import: "
            "RuntimeError: no badges today.",
            id="broken-module",
        ),
        pytest.param(
            ["--database-url", "oracle://scott:tiger@db/orcl", "awards", "ada"],
            {},
            "The database URL 'oracle://scott:********@db/orcl' is not supported; abadges works "
            "with sqlite+aiosqlite://, postgresql+asyncpg:// and mysql+asyncmy:// URLs.",
            id="unsupported-database",
        ),
        pytest.param(
            ["queue"],
            {"ABADGES_QUEUE": "celery"},
            "queue must be one of ['redis', 'inline']; got 'celery'. "
            "The ABADGES_* variables set: ['ABADGES_BADGES', 'ABADGES_DATABASE_URL', "
            "'ABADGES_NOTICES_STREAM', 'ABADGES_QUEUE'].",
            id="bad-setting",
        ),
    ],
)
async def test_a_user_error_is_one_line_and_exit_status_1(
    cli: Cli, args: list[str], env: dict[str, str], message: str
) -> None:
    (cli.cwd / "broken_badges.py").write_text("raise RuntimeError('no badges today.')\n")
    assert (await cli(*args, **env)).error_line() == message


@pytest.mark.parametrize(
    "args",
    [["holders"], ["holders", "points", "--limit", "-1"], ["revoke", "ada", "points", "two"]],
    ids=["missing-argument", "negative-limit", "level-not-a-number"],
)
async def test_a_usage_error_exits_with_2(cli: Cli, args: list[str]) -> None:
    result = await cli(*args)
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("Usage: abadges ")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_an_unreachable_database_is_named_with_its_password_obscured(cli: Cli) -> None:
    port = free_port()
    url = f"postgresql+asyncpg://postgres:secret@127.0.0.1:{port}/test"
    line = (await cli("--database-url", url, "badges")).error_line()
    assert line.startswith(
        f"The database postgresql+asyncpg://postgres:***@127.0.0.1:{port}/test cannot be reached: "
    )
    assert "secret" not in line


async def test_a_silent_database_is_unreachable_after_5_seconds(cli: Cli, silent_port: int) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_port}/test"
    started = time.monotonic()
    line = (await cli("--database-url", url, "awards", "ada")).error_line()
    assert time.monotonic() - started < 9
    assert line == f"The database {url} cannot be reached: it did not answer within 5s."


@pytest.fixture
async def arq_keys(redis_url: str) -> AsyncIterator[list[str]]:
    """Keys a test writes in arq's layout, deleted afterwards."""
    keys: list[str] = []
    yield keys
    client = redis.asyncio.Redis.from_url(redis_url)
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_queue_counts_jobs_in_arqs_layout(
    cli: Cli, redis_url: str, queue_name: str, arq_keys: list[str]
) -> None:
    job = f"test-cli-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    entries = {
        f"{job}-oldest": now - 30_000,
        f"{job}-retried": now - 1_000,  # started once, waiting to run again
        f"{job}-later": now + 600_000,  # a retry waiting out its backoff
        f"{job}-running": now - 5_000,  # its first try
        f"{job}-rerun": now - 2_000,  # its second try
        # More than one page of ZRANGE.
        **{f"{job}-{n}": now - 500 for n in range(1200)},
    }
    in_progress = [f"arq:in-progress:{job}-running", f"arq:in-progress:{job}-rerun"]
    tries = {f"arq:retry:{job}-retried": 1, f"arq:retry:{job}-running": 1}
    tries[f"arq:retry:{job}-rerun"] = 2
    arq_keys += [*in_progress, *tries]
    client = redis.asyncio.Redis.from_url(redis_url)
    async with client.pipeline(transaction=False) as pipe:
        pipe.zadd(queue_name, entries)
        for key in in_progress:
            pipe.set(key, b"1", ex=60)
        for key, count in tries.items():
            pipe.set(key, count, ex=60)
        await pipe.execute()
    await client.aclose()

    data = (
        await cli("--redis-url", redis_url, "--queue-name", queue_name, "queue", "--json")
    ).json()
    age = data.pop("oldest_queued_seconds")
    assert 30 <= age < 40
    assert data == {
        "queue_name": queue_name,
        "queued": 1203,
        "scheduled": 1,
        "in_progress": 2,
        "retried": 2,
    }

    text = await cli("queue", ABADGES_REDIS_URL=redis_url, ABADGES_QUEUE_NAME=queue_name)
    lines = text.out.splitlines()
    assert lines[:-1] == [
        f"queue          {queue_name}",
        "queued         1203",
        "scheduled      1",
        "in progress    2",
        "retried        2",
    ]
    assert re.fullmatch(r"oldest queued  3\d\.\ds", lines[-1])


async def test_queue_of_an_empty_queue(cli: Cli, redis_url: str, queue_name: str) -> None:
    text = await cli("--redis-url", redis_url, "--queue-name", queue_name, "queue")
    assert text.out.splitlines()[-1] == "oldest queued  -"
    data = (
        await cli("--redis-url", redis_url, "--queue-name", queue_name, "queue", "--json")
    ).json()
    assert data["queued"] == 0
    assert data["oldest_queued_seconds"] is None


@pytest.mark.parametrize("command", [["queue"], ["worker", "check"]])
@pytest.mark.parametrize("server", ["refused", "silent"])
async def test_redis_unreachable_is_a_user_error_within_seconds(
    cli: Cli, server: str, silent_port: int, command: list[str]
) -> None:
    port = free_port() if server == "refused" else silent_port
    started = time.monotonic()
    url = f"redis://:secret@127.0.0.1:{port}"
    line = (await cli("--redis-url", url, *command)).error_line()
    assert time.monotonic() - started < 5
    assert line.startswith(f"Redis at redis://:***@127.0.0.1:{port} cannot be reached: ")
    assert "secret" not in line


def test_version() -> None:
    done = subprocess.run([ABADGES, "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"abadges, version \d+\.\d+\.\d+\S*\n", done.stdout)


async def test_grant_revoke_with_a_reason_and_history(cli: Cli) -> None:
    assert (await cli("db", "upgrade")).code == 0
    granted = await cli("grant", "ada", "points", "2", "--by", "mod:eve", "--reason", "Meetup")
    assert (granted.code, granted.err) == (0, "")
    assert re.fullmatch(
        r"Granted badge 'points' level 2 \(Silver\) to user 'ada': award \d+\.\n", granted.out
    )
    again = await cli("grant", "ada", "points", "2")
    assert again.out == "User 'ada' holds badge 'points' level 2 already.\n"
    assert (await cli("grant", "ada", "points", "2", "--json")).json() is None
    thanks = (await cli("grant", "bob", "thanks", "--json")).json()
    assert (thanks["slug"], thanks["source"], thanks["granted_by"]) == ("thanks", "manual", None)
    [award] = (await cli("awards", "ada", "--json")).json()
    assert (award["source"], award["granted_by"], award["reason"]) == (
        "manual",
        "mod:eve",
        "Meetup",
    )
    revoked = await cli("revoke", "ada", "points", "--by", "mod:eve", "--reason", "Duplicate")
    assert revoked.out == "Revoked 1 award of badge 'points' from user 'ada'.\n"

    shown = await cli("history", "--user", "ada")
    lines = shown.out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "at", "action", "user_id", "slug", "level", "source", "by", "reason"
    ]  # fmt: skip
    assert [re.split(r"\s{2,}", line)[1:] for line in lines[1:]] == [
        ["revoked", "ada", "points", "2", "manual", "mod:eve", "Duplicate"],
        ["granted", "ada", "points", "2", "manual", "mod:eve", "Meetup"],
    ]
    changes = (await cli("history", "--badge", "points", "--limit", "1", "--json")).json()
    assert [(c["action"], c["by"], c["reason"]) for c in changes] == [
        ("revoked", "mod:eve", "Duplicate")
    ]
    assert (await cli("history", "--user", "cy", "--json")).json() == []
    bad = await cli("grant", "ada", "points", "7")
    assert (bad.code, bad.error_line()) == (
        1,
        "Badge 'points' has 3 level(s); level 7 is out of range.",
    )


class Monthly(Badge):
    slug = "monthly"
    levels = ["Top contributor"]
    events = ["contributed"]
    expires_after = datetime.timedelta(days=30)

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


async def test_expire_moves_the_expired_awards_to_the_history(cli: Cli) -> None:
    module = "\n".join(
        [
            "import datetime",
            "from typing import Any",
            "from abadges import Badge, BadgeAwarded, badges",
            inspect.getsource(Monthly),
            "badges.register(Monthly)",
        ]
    )
    (cli.cwd / "expiring_badges.py").write_text(module)
    cli.env["ABADGES_BADGES"] = "expiring_badges"
    registry = BadgeRegistry()
    registry.configure(database_url=cli.env["ABADGES_DATABASE_URL"])
    registry.register(Monthly)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=31)
    async with registry.lifespan():
        await registry.migrate()
        for user in ("ada", "bob"):
            await registry.possibly_award_badge("contributed", user=user, force_timestamp=old)
        await registry.possibly_award_badge("contributed", user="cy")

    moved = await cli("expire")
    assert (moved.code, moved.out, moved.err) == (0, "Moved 2 expired awards to the history.\n", "")
    assert (await cli("expire", "--json")).json() == {"expired": 0}
    assert (await cli("expire", "--batch-size", "0")).code == 2
    changes = (await cli("history", "--json")).json()
    assert sorted((c["action"], c["user_id"]) for c in changes if c["action"] == "expired") == [
        ("expired", "ada"),
        ("expired", "bob"),
    ]
    [listed] = (await cli("badges", "--json")).json()
    assert (listed["expires_after"], listed["temporary"]) == (30 * 24 * 3600.0, False)
