"""The one-command demo: the Starlette example and a worker, driven over HTTP.

`scripts/demo` runs `python -m examples.demo` from the repository root. It starts what it needs
(a redis-server from an installed binary unless `ABADGES_REDIS_URL` is set; the app under
uvicorn; an `arq abadges.worker.Settings` worker), plays a short scenario that earns inline and
deferred badges, grants and revokes one as a moderator would, prints what was awarded and the
history, backfills the badges of users imported from an older site with `abadges backfill`,
and stops everything it started. The awards go to a
fresh SQLite file in a temporary directory, unless `ABADGES_DATABASE_URL` names a database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import redis.asyncio

from abadges import badges
from abadges.testing import RedisServer, free_port

from . import store

ROOT = Path(__file__).resolve().parents[1]
ABADGES = str(Path(sys.executable).parent / "abadges")
START_TIMEOUT = 30
WORKER_TIMEOUT = 60
FIRST_DAY = datetime.date(2024, 5, 1)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="abadges-demo-") as directory:
        async with run_services(Path(directory)) as demo:
            await play(demo)
        print(f"\nStopped everything the demo started; removed {directory}.")


@dataclasses.dataclass
class Demo:
    client: httpx.AsyncClient
    redis_url: str
    queue_name: str
    stop_worker: Callable[[], Awaitable[None]]
    env: dict[str, str]


@contextlib.asynccontextmanager
async def run_services(directory: Path) -> AsyncIterator[Demo]:
    """Redis, the tables, the app and the worker; all stopped on the way out."""
    database_url = os.environ.get(
        "ABADGES_DATABASE_URL", f"sqlite+aiosqlite:///{directory / 'demo.sqlite3'}"
    )
    async with contextlib.AsyncExitStack() as stack:
        redis_url = os.environ.get("ABADGES_REDIS_URL")
        if redis_url is None:
            server = await stack.enter_async_context(RedisServer())
            redis_url, redis_note = server.url, f"started from {server.binary}"
        else:
            redis_note = "from ABADGES_REDIS_URL"
        # A queue of its own, so that a shared Redis's other workers never see the demo's jobs.
        queue_name = f"abadges:demo:{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "ABADGES_DATABASE_URL": database_url,
            "ABADGES_REDIS_URL": redis_url,
            "ABADGES_QUEUE_NAME": queue_name,
            "ABADGES_BADGES": "examples.badges",
            "ABADGES_USER_LOADER": "examples.store:load_user",
        }
        badges.configure(database_url=database_url, redis_url=redis_url, queue_name=queue_name)
        async with badges.lifespan():
            await store.create_tables()

        port = free_port()
        app = [sys.executable, "-m", "uvicorn", "examples.starlette_app:app"]
        app += ["--host", "127.0.0.1", "--port", str(port)]
        worker = [sys.executable, "-m", "arq", "abadges.worker.Settings"]
        print("abadges demo")
        print(f"  database: {database_url}")
        print(f"  redis:    {redis_url} ({redis_note})")
        print(f"  app:      http://127.0.0.1:{port} ({' '.join(app[2:4])})")
        print(f"  worker:   {' '.join(worker[2:])}\n")
        processes = {}
        for name, command in (("app", app), ("worker", worker)):
            log = stack.enter_context(open(directory / f"{name}.log", "wb"))  # noqa: ASYNC230
            processes[name] = await anyio.open_process(
                command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            stack.push_async_callback(stop, processes[name], name, directory / f"{name}.log")

        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        )
        await wait_until_serving(client)
        yield Demo(
            client,
            redis_url,
            queue_name,
            functools.partial(stop, processes["worker"], "worker", directory / "worker.log"),
            env,
        )


async def play(demo: Demo) -> None:
    """The scenario: points for ana (inline badges), a month of visits for bob and cy
    (the deferred Addict badge, which cy misses by one day; the weekly badge, which expires),
    then a moderator's grant of the Addict badge to cy, and its revoke."""
    client = demo.client
    print("Inline badges, awarded in the request:")
    for points in (3000, 2500, 500, 2500, 3000):
        result = await post(client, "/users/ana/points", {"points": points})
        awarded = ", ".join(a["name"] for a in result["awarded"]) or "nothing new"
        print(f"  POST /users/ana/points {points:>5} -> {result['points']:>6} points, {awarded}")

    print("\nDeferred badges, queued for the worker:")
    days = [FIRST_DAY + datetime.timedelta(days=n) for n in range(30)]
    for user, skipped in (("bob", None), ("cy", days[14])):
        visited = [day for day in days if day != skipped]
        for day in visited:
            await post(client, f"/users/{user}/visits", {"day": day.isoformat()})
        missing = f", not {skipped}" if skipped else ""
        print(f"  POST /users/{user}/visits x{len(visited)}: {days[0]} to {days[-1]}{missing}")
    started = time.monotonic()
    await wait_until_drained(demo.redis_url, demo.queue_name)
    # SIGTERM lets the worker finish the jobs it has taken: then every visit has been evaluated.
    await demo.stop_worker()
    print(f"  the worker ran every job in {time.monotonic() - started:.1f} s, then stopped")

    print("\nWhat each user holds (GET /users/{id}/badges):")
    for user in ("ana", "bob", "cy"):
        held = (await get(client, f"/users/{user}/badges"))["awards"]
        print(f"  {user}: {', '.join(a['name'] for a in held) or 'nothing'}")

    print("\nEvery badge (GET /badges):")
    for badge in await get(client, "/badges"):
        for level in badge["levels"]:
            path = f"/badges/{badge['slug']}/{level['level']}"
            holders = [h["user"] for h in (await get(client, path))["holders"]]
            print(
                f"  {badge['slug']:<9}{level['name']:<10}{level['description']:<32}"
                f"awarded {level['awarded']}, to {', '.join(dict.fromkeys(holders)) or 'no one'}"
            )
    print("\nThe leaderboard, by the points of the badges held (GET /leaderboard):")
    for standing in (await get(client, "/leaderboard"))["standings"]:
        count = f"{standing['awards']} badge" + ("" if standing["awards"] == 1 else "s")
        print(f"  {standing['rank']} {standing['user']:<4}{standing['points']:>4} points, {count}")
    catalogue = await client.get("/")
    levels = catalogue.text.count('class="card level ')
    print(
        f"GET / serves the badge catalogue as HTML: {catalogue.status_code}, {levels} levels "
        "(the hidden Windfall left out)."
    )

    print("\nBy hand, as a moderator would (a real site puts these behind its own auth):")
    grant = {"badge": "addict", "by": "mod:7", "reason": "Missed 2024-05-15: the site was down"}
    awarded = (await post(client, "/users/cy/grants", grant))["awarded"]
    print(f"  POST /users/cy/grants {grant['badge']} -> {awarded['name']}, {awarded['source']}")
    revoke = {"badge": "addict", "by": "mod:9", "reason": "The site was up that day"}
    revoked = (await post(client, "/users/cy/revocations", revoke))["revoked"]
    print(f"  POST /users/cy/revocations {revoke['badge']} -> {revoked} revoked")
    print("What changed for cy, newest first (GET /users/cy/history):")
    for change in (await get(client, "/users/cy/history"))["changes"]:
        by = f" by {change['by']}" if change["by"] else ""
        reason = f": {change['reason']}" if change["reason"] else ""
        print(f"  {change['action']:<8}{change['name']:<10}{change['source']}{by}{reason}")
    page = await client.get("/users/cy")
    print(f"GET /users/cy serves it as cy's HTML page: {page.status_code}.")

    await backfill(demo)


async def backfill(demo: Demo) -> None:
    """Users imported from an older site hold no badge: a backfill gives them theirs."""
    print("\nUsers imported from an older site, with points but no badge yet:")
    async with badges.lifespan():
        for user, points in (("dan", 12000), ("eve", 6000)):
            await store.add_points(user, points)
            print(f"  {user}: {points:,} points")
    command = ["backfill", "--users", "examples.backfill:users", "--badge", "points"]
    print(f"  abadges {' '.join(command)} [--dry-run]:")
    for flags in (["--dry-run"], []):
        result = await anyio.run_process(
            [ABADGES, *command, *flags, "--json"], cwd=ROOT, env=demo.env
        )
        report = json.loads(result.stdout)
        what = "a dry run" if flags else "the run"
        would = "would be " if flags else ""
        print(f"    {what}: {report['users']} users, {report['granted']} {would}granted")
    for user in ("dan", "eve"):
        held = (await get(demo.client, f"/users/{user}/badges"))["awards"]
        names = ", ".join(f"{award['name']} ({award['source']})" for award in held)
        print(f"  {user}: {names}")


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    response = await client.post(path, json=body)
    response.raise_for_status()
    return response.json()


async def get(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    response.raise_for_status()
    return response.json()


async def wait_until_serving(client: httpx.AsyncClient) -> None:
    with anyio.fail_after(START_TIMEOUT):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/badges")).status_code == 200:
                    return
            await anyio.sleep(0.1)


async def wait_until_drained(redis_url: str, queue_name: str) -> None:
    """Until the worker has taken every job of the queue."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        with anyio.fail_after(WORKER_TIMEOUT):
            while await client.zcard(queue_name):  # noqa: ASYNC110 - Redis sends no event.
                await anyio.sleep(0.1)
    finally:
        await client.aclose()


async def stop(process: anyio.abc.Process, name: str, log: Path) -> None:
    """SIGTERM, as a supervisor would; SIGKILL if it is still there 20 seconds later."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(20):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
    if process.returncode not in (0, -15):
        report_failure(name, process.returncode, log)


def report_failure(name: str, returncode: int | None, log: Path) -> None:
    print(f"The {name} exited with {returncode}; its log ends:", file=sys.stderr)
    print(log.read_text()[-2000:], file=sys.stderr)


if __name__ == "__main__":
    anyio.run(main)
