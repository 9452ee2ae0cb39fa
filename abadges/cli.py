"""The `abadges` command: look at badges, awards and the queue of deferred badges from a shell.

    abadges [--database-url URL] [--badges MODULES] [--redis-url URL] [--queue-name NAME] COMMAND

It reads the same `ABADGES_*` settings as the app and the worker; the options before the command
override them. Every command takes `--json`. Exit status: 0 on success, 1 with one line naming
the fault on a user error (an unknown slug, a bad level, a database or Redis that cannot be
reached), 2 on a usage error. See docs/cli.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence, Sized
from typing import Any, TypeVar

import anyio
import click
from arq.constants import in_progress_key_prefix, retry_key_prefix
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from rich.text import Text

# The public names only (and one private helper of the package), so that the modules behind
# them can move without touching the command.
from . import (
    AbadgesError,
    Award,
    BackfillReport,
    Badge,
    BadgeRegistry,
    ConfigurationError,
    __version__,
    badges,
)
from ._progress import BackfillProgress
from ._utils import describe, import_from_string, import_module, obscure
from .backfill import error_text
from .redis_url import redis_client

#: Seconds the database may take to accept a connection before it counts as unreachable.
DATABASE_TIMEOUT = 5
#: Seconds Redis may take to connect or answer a command before it counts as unreachable.
REDIS_TIMEOUT = 2
#: Queue entries read per round trip by `abadges queue`.
QUEUE_PAGE = 1000

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="abadges")
@click.option("--database-url", metavar="URL", help="The database.  [env: ABADGES_DATABASE_URL]")
@click.option(
    "--badges",
    "badge_modules",
    metavar="MODULES",
    help="Comma-separated modules that register the badges.  [env: ABADGES_BADGES]",
)
@click.option(
    "--redis-url", metavar="URL", help="The Redis of the queue.  [env: ABADGES_REDIS_URL]"
)
@click.option("--queue-name", metavar="NAME", help="The arq queue.  [env: ABADGES_QUEUE_NAME]")
def main(
    database_url: str | None,
    badge_modules: str | None,
    redis_url: str | None,
    queue_name: str | None,
) -> None:
    """Badges, awards and the queue of abadges, configured like the worker."""
    options = {
        "database_url": database_url,
        "badges": badge_modules,
        "redis_url": redis_url,
        "queue_name": queue_name,
    }
    try:
        badges.configure(**{name: value for name, value in options.items() if value is not None})
    except AbadgesError as exc:
        raise click.ClickException(one_line(exc)) from exc


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table (see docs/cli.md)."
)


# Commands ---------------------------------------------------------------------------------------


@main.command("badges")
@json_option
def list_badges(as_json: bool) -> None:
    """The registered badges, with award counts.

    One row per level: its name, how many awards it has, and whether the badge is multiple
    and deferred.
    """
    counts = run(lambda registry: registry.award_counts())
    data = [badge_record(badge, counts[slug]) for slug, badge in badges.registered.items()]
    if as_json:
        print_json(data)
        return
    columns = ("slug", "level", "name", "awards", "multiple", "deferred")
    rows = [
        (
            b["slug"],
            lv["level"],
            lv["name"],
            lv["awards"],
            yes_no(b["multiple"]),
            yes_no(b["deferred"]),
        )
        for b in data
        for lv in b["levels"]
    ]
    print_table(columns, rows)


@main.command()
@click.argument("user")
@json_option
def awards(user: str, as_json: bool) -> None:
    """A user's awards, newest first.

    USER is the identity stored with the awards (user.id by default).
    """
    found = run(lambda registry: registry.awards_for(user))
    print_awards(found, ("id", "slug", "level", "name", "awarded_at"), as_json)


@main.command()
@click.argument("slug")
@click.option("--level", type=int, help="Only this level (1-based).")
@click.option(
    "--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Awards per page."
)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Awards to skip."
)
@json_option
def holders(slug: str, level: int | None, limit: int, offset: int, as_json: bool) -> None:
    """A badge's awards, newest first.

    The awards of badge SLUG (of --level only, if given), a page at a time.
    """
    found = run(lambda registry: registry.holders(slug, level, limit=limit, offset=offset))
    print_awards(found, ("id", "user_id", "level", "name", "awarded_at"), as_json)


def change_command(command: Callable[..., None]) -> Callable[..., None]:
    """The arguments and options of a command that changes what a user holds."""
    for decorator in reversed(
        (
            click.argument("user"),
            click.argument("slug"),
            click.argument("level", type=int, required=False),
            click.option("--by", metavar="WHO", help="Who makes the change, for the history."),
            click.option("--reason", metavar="TEXT", help="Why, for the history."),
            json_option,
        )
    ):
        command = decorator(command)
    return main.command()(command)


@change_command
def grant(
    user: str, slug: str, level: int | None, by: str | None, reason: str | None, as_json: bool
) -> None:
    """Award a badge by hand.

    Gives USER badge SLUG at LEVEL (which a badge of one level does not need), recorded as a
    manual award with --by and --reason, and prints it. A level held already is not an error.
    """

    def text(award: Award | None) -> str:
        if award is None:
            return f"User {user!r} holds {describe_badge(slug, level)} already."
        which = describe_badge(slug, award.level)
        return f"Granted {which} ({award.name}) to user {user!r}: award {award.id}."

    print_change(
        run(lambda registry: registry.grant(user, slug, level, by=by, reason=reason)),
        as_json,
        text,
        lambda award: None if award is None else award_record(award),
    )


@change_command
def revoke(
    user: str, slug: str, level: int | None, by: str | None, reason: str | None, as_json: bool
) -> None:
    """Remove a user's awards of a badge.

    Removes USER's awards of badge SLUG (of LEVEL only, if given), each written to the history
    with --by and --reason, and prints how many.
    """

    def text(count: int) -> str:
        which = describe_badge(slug, level)
        return f"Revoked {count} award{'' if count == 1 else 's'} of {which} from user {user!r}."

    print_change(
        run(lambda registry: registry.revoke(user, slug, level, by=by, reason=reason)),
        as_json,
        text,
        lambda count: {"user_id": user, "slug": slug, "level": level, "revoked": count},
    )


@main.command()
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Awards per transaction.",
)
@json_option
def expire(batch_size: int, as_json: bool) -> None:
    """Move expired awards to the history.

    What the worker does every minute: each award past its expires_at is written to the
    history as "expired" and announced to the on_revoke callbacks. Where no worker runs, run
    this from cron.
    """
    print_change(
        run(lambda registry: registry.expire_awards(batch_size)),
        as_json,
        lambda moved: f"Moved {moved} expired award{'' if moved == 1 else 's'} to the history.",
        lambda moved: {"expired": moved},
    )


@main.command()
@click.option(
    "--users",
    "users_function",
    required=True,
    metavar="MODULE:FUNCTION",
    help="A function giving the users: an iterable or async iterable, of users or of ids.",
)
@click.option("--badge", "slugs", multiple=True, metavar="SLUG", help="Only this badge; repeat.")
@click.option("--dry-run", is_flag=True, help="Write nothing; report what would change.")
@click.option("--revoke", is_flag=True, help="Revoke the levels award() no longer gives.")
@click.option("--checkpoint", metavar="NAME", help="Save progress under NAME, to resume.")
@click.option("--deferred", is_flag=True, help="Send the batches to the running workers.")
@click.option("--no-announce", is_flag=True, help="Call no on_award/on_revoke callbacks.")
@click.option("--notify", is_flag=True, help="Publish the changes to the live notices stream.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Users per batch.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Batches at once.",
)
@click.option("--total", type=click.IntRange(min=0), help="How many users, for the ETA.")
@json_option
def backfill(
    users_function: str,
    slugs: tuple[str, ...],
    dry_run: bool,
    revoke: bool,
    checkpoint: str | None,
    deferred: bool,
    no_announce: bool,
    notify: bool,
    batch_size: int,
    concurrency: int,
    total: int | None,
    as_json: bool,
) -> None:
    """Award badges to the users a site has already.

    Evaluates the badges (every one, or each --badge) for each user that MODULE:FUNCTION
    gives, called once connected, and records what they award, with source "backfill". A
    progress bar on a terminal, a line a second in a pipe, then the report. Ctrl-C stops: the
    batches written stay, and with --checkpoint the same command resumes after them. Exit
    status 1 when a badge failed for a user.
    """
    if checkpoint is not None and dry_run:
        raise click.UsageError("--checkpoint and --dry-run go apart: a dry run writes nothing.")
    if checkpoint == "":
        raise click.BadParameter("must not be empty.", param_hint="--checkpoint")
    progress = BackfillProgress(total, quiet=as_json)
    options = {
        "slugs": slugs or None,
        "dry_run": dry_run,
        "revoke": revoke,
        "checkpoint": checkpoint,
        "announce": not no_announce,
        "notify": notify,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "progress": progress.update,
    }
    try:
        with progress:
            report = run(
                lambda registry: backfill_users(
                    registry, users_function, deferred, progress, options
                )
            )
    except KeyboardInterrupt:
        done = f"Stopped after {progress.report.users:,} users"
        if checkpoint is None:
            click.echo(
                f"{done}; the awards written stay. Run again to go on (nothing is recorded "
                "twice), with --checkpoint NAME to resume where a run stopped.",
                err=True,
            )
        else:
            click.echo(
                f"{done}; checkpoint {checkpoint!r} keeps the batches written: run the same "
                "command again to resume after them.",
                err=True,
            )
        raise SystemExit(130) from None
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
    if report.failed:
        raise SystemExit(1)


async def backfill_users(
    registry: BadgeRegistry,
    spec: str,
    deferred: bool,
    progress: BackfillProgress,
    options: dict[str, Any],
) -> BackfillReport:
    """Call the --users function, check that workers run for --deferred, and backfill."""
    function = import_from_string(spec, "--users")
    if not callable(function):
        raise click.ClickException(f"--users {spec!r} names {function!r}, which is not callable.")
    users = function()
    if inspect.isawaitable(users):
        users = await users
    if isinstance(users, Sized) and progress.total is None:
        progress.set_total(len(users))
    if deferred:
        # Imported here: abadges.worker builds the worker's settings when it is imported.
        from .worker import live_workers

        queue_name = registry.settings.queue_name
        if not await live_workers(registry.settings.redis_url, queue_name, anywhere=True):
            raise click.ClickException(
                f"--deferred sends the batches to the workers of queue {queue_name!r}, and "
                "none is live: start `arq abadges.worker.WorkerSettings`, or run without "
                "--deferred."
            )
    return await registry.backfill(users, deferred=deferred, **options)


def print_report(report: BackfillReport) -> None:
    columns = ("badge", "evaluations", "granted", "revoked", "failed")
    rows = [
        (slug, c.evaluations, c.granted, c.revoked, c.failed) for slug, c in report.badges.items()
    ]
    print_table(columns, rows)
    what = "would be " if report.dry_run else ""
    click.echo(
        f"{report.users:,} users, {report.evaluations:,} evaluations in {report.seconds:.1f}s: "
        f"{report.granted:,} {what}granted, {report.revoked:,} {what}revoked, "
        f"{report.failed:,} failed."
        + (f" {report.resumed:,} users done before were skipped." if report.resumed else "")
        + (" Dry run: nothing was written." if report.dry_run else "")
    )
    if report.errors:
        click.echo(f"The first {len(report.errors)} errors:")
        for error in report.errors:
            click.echo(f"  {error_text(error)}")


@main.command("history")
@click.option("--user", metavar="USER", help="Only this user's changes.")
@click.option("--badge", "slug", metavar="SLUG", help="Only this badge's changes.")
@click.option(
    "--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Changes per page."
)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Changes to skip."
)
@json_option
def show_history(
    user: str | None, slug: str | None, limit: int, offset: int, as_json: bool
) -> None:
    """Changes of what users hold, newest first.

    Every grant, revoke, expiry and replacement, with who made it and why: of --user, of
    --badge, or of everyone, a page at a time.
    """
    found = run(lambda registry: registry.history(user, slug, limit=limit, offset=offset))
    records = [dataclasses.asdict(change) | {"at": change.at.isoformat()} for change in found]
    if as_json:
        print_json(records)
        return
    columns = ("at", "action", "user_id", "slug", "level", "source", "by", "reason")
    shown = [
        {**r, "at": c.at.isoformat(timespec="seconds")} for r, c in zip(records, found, strict=True)
    ]
    print_table(columns, [[r[c] for c in columns] for r in shown])


@main.group()
def db() -> None:
    """The database schema."""


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Bring the tables up to date.

    Creates or upgrades the abadges tables to this version's schema, as badges.migrate() does.
    """
    run(lambda registry: registry.migrate())
    url = obscure(badges.settings.database_url)
    if as_json:
        print_json({"database_url": url, "upgraded": True})
        return
    click.echo(f"The abadges tables of {url} are up to date.")


@db.command()
@json_option
def current(as_json: bool) -> None:
    """The schema revision the database is at, and this version's.

    Exit 0 when the database is at this version's revision; 1 when it needs
    `abadges db upgrade` (one line saying so).
    """
    status = run(lambda registry: registry.migration_status())
    url = obscure(badges.settings.database_url)
    if as_json:
        print_json({"database_url": url, "current": status.current, "head": status.head})
    else:
        click.echo(f"{url}: revision {status.current or 'none'} (this abadges: {status.head}).")
    if not status.is_current:
        raise click.ClickException(
            f"The abadges tables of {url} are not at revision {status.head}: run "
            "`abadges db upgrade`."
        )


@main.group()
def worker() -> None:
    """The workers of deferred badges."""


@worker.command()
@click.option("--pid", type=int, help="The worker process to check (default: any).")
@click.option("--host", help="The host the workers run on (default: this one).")
@json_option
def check(pid: int | None, host: str | None, as_json: bool) -> None:
    """Is a worker live? The liveness probe of a worker.

    Exit 0 when a worker of the queue on this host (or --host), or the worker process --pid,
    has refreshed its health key lately; exit 1 when none has: it died or is stuck.
    """
    settings = badges.settings
    # Reading and printing happen in one coroutine, as in `queue` (coveragepy#1671).
    anyio.run(show_live, settings.redis_url, settings.queue_name, host, pid, as_json)


async def show_live(
    redis_url: str, queue_name: str, host: str | None, pid: int | None, as_json: bool
) -> None:
    # Imported here: abadges.worker builds the worker's settings when it is imported.
    from .worker import health_key, live_workers

    try:
        live = await live_workers(redis_url, queue_name, host, pid)
    except (OSError, RedisError) as exc:
        raise click.ClickException(
            f"Redis at {obscure(redis_url)} cannot be reached: {describe(exc)}."
        ) from exc
    if as_json:
        print_json({"queue_name": queue_name, "live": live})
    elif live:
        pids = ", ".join(str(w["pid"]) for w in live)
        click.echo(f"Live workers of queue {queue_name!r}: {pids}.")
    if not live:
        key = health_key(queue_name, host, pid)
        which = f"process {pid}" if pid is not None else "any process"
        where = key.rpartition(":")[0].rpartition(":")[2]
        raise click.ClickException(
            f"No live worker of queue {queue_name!r} on host {where!r} ({which}): its "
            "health key has lapsed, so the worker has stopped, died or is stuck."
        )


@main.command()
@json_option
def queue(as_json: bool) -> None:
    """The queue of deferred badges.

    Jobs queued (scheduled: those waiting out a retry's backoff), in progress and retried, and
    how long the oldest queued job has been waiting.
    """
    settings = badges.settings
    # Counting and printing happen in one coroutine: on Python 3.11, coverage.py stops tracing
    # the frames that called into a redis-py client using hiredis (coveragepy#1671).
    anyio.run(show_queue, settings.redis_url, settings.queue_name, as_json)


async def show_queue(redis_url: str, queue_name: str, as_json: bool) -> None:
    data = {"queue_name": queue_name, **await read_queue(redis_url, queue_name)}
    if as_json:
        print_json(data)
        return
    age = data["oldest_queued_seconds"]
    rows = [
        ("queue", data["queue_name"]),
        ("queued", data["queued"]),
        ("scheduled", data["scheduled"]),
        ("in progress", data["in_progress"]),
        ("retried", data["retried"]),
        ("oldest queued", "-" if age is None else f"{age:.1f}s"),
    ]
    print_table(("", ""), rows, header=False)


# Helpers ----------------------------------------------------------------------------------------


def run(work: Callable[[BadgeRegistry], Awaitable[T]]) -> T:
    """Import the badge modules, then run `work` on the default registry, connected; an expected
    error becomes a one-line `ClickException` (exit status 1)."""
    try:
        import_badge_modules()
        return anyio.run(run_connected, work)
    except AbadgesError as exc:
        raise click.ClickException(one_line(exc)) from exc


async def run_connected(work: Callable[[BadgeRegistry], Awaitable[T]]) -> T:
    try:
        with anyio.fail_after(DATABASE_TIMEOUT):
            await badges.connect()
    except AbadgesError:
        raise
    except Exception as exc:  # The drivers' errors: refused, unknown host, bad password, ...
        reason = (
            f"it did not answer within {DATABASE_TIMEOUT}s"
            if isinstance(exc, TimeoutError)
            else describe(exc)
        )
        raise click.ClickException(
            f"The database {obscure(badges.settings.database_url)} cannot be reached: {reason}."
        ) from exc
    async with badges.lifespan():
        return await work(badges)


def import_badge_modules() -> None:
    """Import the modules of the `badges` setting, as the worker does, from the current
    directory too (as `arq` does), so that their badges are registered."""
    given = click.get_current_context().find_root().params.get("badge_modules") is not None
    setting = "--badges" if given else "ABADGES_BADGES"
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in badges.settings.badges:
        try:
            import_module(module, setting)
        except ConfigurationError:
            raise
        except Exception as exc:
            raise click.ClickException(
                f"The badge module {module!r} (from {setting}) failed to import: {describe(exc)}."
            ) from exc


async def read_queue(redis_url: str, queue_name: str) -> dict[str, Any]:
    """Count the queue's jobs in arq's layout: the queue is a sorted set of job ids scored by
    the time (ms) each becomes runnable; `arq:in-progress:<id>` marks a running job and
    `arq:retry:<id>` counts the tries that started."""
    client = redis_client(
        redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    now_ms = time.time() * 1000
    counts = {"queued": 0, "scheduled": 0, "in_progress": 0, "retried": 0}
    oldest_ms: float | None = None
    try:
        with anyio.fail_after(3 * REDIS_TIMEOUT):
            start = 0
            while page := await client.zrange(
                queue_name, start, start + QUEUE_PAGE - 1, withscores=True
            ):
                start += len(page)
                # One round trip for the whole page: is each job running, how often it started.
                async with client.pipeline(transaction=False) as pipe:
                    for job_id, _ in page:
                        pipe.exists(in_progress_key_prefix + job_id.decode())
                        pipe.get(retry_key_prefix + job_id.decode())
                    answers = await pipe.execute()
                for (_, score), running, tries in zip(
                    page, answers[::2], answers[1::2], strict=True
                ):
                    # A running job has started `tries` times; a waiting one will start again.
                    if int(tries or 0) - bool(running) >= 1:
                        counts["retried"] += 1
                    if running:
                        counts["in_progress"] += 1
                        continue
                    counts["queued"] += 1
                    if score > now_ms:
                        counts["scheduled"] += 1
                    elif oldest_ms is None:
                        oldest_ms = score  # ZRANGE gives the lowest scores first.
    except (OSError, RedisError) as exc:  # TimeoutError is an OSError.
        raise click.ClickException(
            f"Redis at {obscure(redis_url)} cannot be reached: {describe(exc)}."
        ) from exc
    finally:
        await client.aclose()
    age = None if oldest_ms is None else round(max(now_ms - oldest_ms, 0) / 1000, 3)
    return {**counts, "oldest_queued_seconds": age}


def badge_record(badge: Badge, counts: dict[int, int]) -> dict[str, Any]:
    levels = []
    for level in range(1, len(badge.levels) + 1):
        detail = badge.detail(level)
        levels.append(
            {
                "level": level,
                "name": detail.name,
                "description": detail.description,
                "awards": counts[level],
            }
        )
    expires_after = badge.expires_after
    return {
        "slug": badge.slug,
        "multiple": badge.multiple,
        "deferred": badge.deferred,
        "temporary": badge.temporary,
        "replaces_lower": badge.replaces_lower,
        "expires_after": None if expires_after is None else expires_after.total_seconds(),
        "levels": levels,
    }


def print_awards(found: list[Award], columns: Sequence[str], as_json: bool) -> None:
    records = [award_record(award) for award in found]
    if as_json:
        print_json(records)
        return
    shown = [
        {**r, "awarded_at": a.awarded_at.isoformat(timespec="seconds")}
        for r, a in zip(records, found, strict=True)
    ]
    print_table(columns, [[r[c] for c in columns] for r in shown])


def award_record(award: Award) -> dict[str, Any]:
    return {
        "id": award.id,
        "user_id": award.user_id,
        "slug": award.slug,
        "level": award.level,
        "name": award.name,
        "description": award.description,
        "awarded_at": award.awarded_at.isoformat(),
        "source": award.source,
        "granted_by": award.granted_by,
        "reason": award.reason,
        "expires_at": None if award.expires_at is None else award.expires_at.isoformat(),
    }


def describe_badge(slug: str, level: int | None) -> str:
    return f"badge {slug!r}" if level is None else f"badge {slug!r} level {level}"


def print_change(
    result: T, as_json: bool, text: Callable[[T], str], record: Callable[[T], object]
) -> None:
    """Print the result of a command that publishes notices: `record(result)` as JSON, or
    `text(result)`.

    Such a command calls this with `run()` among the arguments, so that nothing of it runs
    after `run()` but in frames entered afterwards. On CPython 3.11, once redis-py has resumed
    a coroutine by throwing into it (its `asyncio.timeout(0)` check of a pooled connection),
    the frames still on the stack lose their line events for coverage.py
    (python/cpython#106749, coveragepy/coveragepy#2124), and the command is measured in a
    subprocess.
    """
    if as_json:
        print_json(record(result))
    else:
        click.echo(text(result))


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], header: bool = True
) -> None:
    """A rich table on a terminal; in a pipe, plain columns without colour codes."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    console = Console()
    if console.is_terminal:
        table = Table(*columns, show_header=header)
        for row in cells:
            table.add_row(*map(Text, row))
        console.print(table)
        return
    lines = [list(columns), *cells] if header else cells
    widths = [max((len(line[n]) for line in lines), default=0) for n in range(len(columns))]
    for line in lines:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def one_line(exc: BaseException) -> str:
    """The message of `exc` and its notes, on one line."""
    return " ".join([str(exc), *getattr(exc, "__notes__", ())]).replace("\n", " ")
