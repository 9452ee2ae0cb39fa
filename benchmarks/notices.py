"""W6 of issue 16: the live notices of the Starlette example app with many streams open, printing
text and JSON lines:

    .venv/bin/python benchmarks/notices.py [--connections 1000] [--awards 200 --rate 20]
        [--probes 300 --probe-rate 30] [--client-processes 2] [--database postgresql] [--smoke]

One `uvicorn examples.starlette_app:app` process serves the example site on a free port of
127.0.0.1, with a private `redis-server` (`abadges.testing.RedisServer`) for its queue and
notices, and a scratch PostgreSQL database `abadges_bench_<hex>` (dropped at the end; or
`--database sqlite`, a temporary file). The clients run in `--client-processes` processes of
this script of their own (`--role clients`, asyncio and httpx): each opens one stream of
server-sent events, `GET /users/{id}/notices`, for each of its users, one user a connection.
Then, in this process:

- **Memory**: the server's RSS (`VmRSS`) before the streams open, and with all of them open
  and the server idle again: the difference per connection, in KB.
- **Delivery**: `--awards` grants of the example's `windfall` badge (a `multiple` one) to
  users drawn from the connected ones, one at a time at `--rate` a second, through
  `badges.grant()` in this process; each must reach its user's stream exactly once (lost,
  duplicated or on another user's stream: exit 1). The latency of each is the client's clock
  when the event's `data:` line is read, less this process's clock just after `grant()`
  returned (see `award()`); p50, p99 and the largest.
- **Responsiveness**: `--probes` plain `GET /users/{id}/badges`, one at a time at
  `--probe-rate` a second, with no stream open, with every stream open and idle, and with
  every stream open during the grants.

`--smoke` is 20 streams, 10 grants and 20 probes a phase, in one client process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.abc
import httpx
import redis.asyncio
from anyio.streams.buffered import BufferedByteReceiveStream

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import workload  # noqa: E402
from bench import database  # noqa: E402

from abadges import badges  # noqa: E402
from abadges.testing import RedisServer, free_port  # noqa: E402

#: The example's `multiple` badge: any user can be granted it again and again.
BADGE = "windfall"
#: The stream of notices, as the app is configured (the `notices_stream` default).
STREAM = "abadges:changes"
#: File descriptors a process needs besides its connections (Python, the pools, logs).
SPARE_FILES = 256
#: Streams a client process opens at once (the rest wait their turn): a burst of a thousand
#: connections at once would only measure the listen backlog.
OPENING = 50


def user_of(n: int) -> str:
    return f"w6u{n:05d}"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


# The client processes (`--role clients`). -----------------------------------------------------


async def clients(url: str, first: int, count: int, last_id: str) -> None:
    """Open a stream for each of users `first` .. `first + count - 1` and keep them open,
    printing a JSON line once all are open (`ready`), one per event received (`event`), and
    one per stream that failed or ended (`error`), until "close" is read from stdin."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(30.0, read=None)
    opening = anyio.Semaphore(OPENING)
    opened = 0
    all_open = anyio.Event()
    started = time.perf_counter()

    async def stream(client: httpx.AsyncClient, user: str) -> None:
        nonlocal opened
        # Every notice after `last_id`: the stream's end before any grant (see `run()`).
        path = f"/users/{user}/notices"
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with opening:
                    response = await stack.enter_async_context(
                        client.stream("GET", path, params={"last_id": last_id})
                    )
                if response.status_code != 200:
                    emit({"error": f"{path}: HTTP {response.status_code}", "user": user})
                    return
                opened += 1
                if opened == count:
                    all_open.set()
                event_id = None
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        # The receive time, before anything else is done with the event.
                        received = time.time()
                        data = json.loads(line[5:])
                        emit({"event": user, "id": event_id, "received": received,
                              "award": data["award"]["id"], "user": data["award"]["user"],
                              "awarded_at": data["award"]["awarded_at"]})  # fmt: skip
                    elif line.startswith("id:"):
                        event_id = line[3:].strip()
                emit({"error": f"{path}: the stream ended", "user": user})
        except httpx.HTTPError as exc:
            emit({"error": f"{path}: {exc!r}", "user": user})

    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client,
        anyio.create_task_group() as task_group,
    ):
        for n in range(first, first + count):
            task_group.start_soon(stream, client, user_of(n))
        await all_open.wait()
        emit({"ready": opened, "seconds": round(time.perf_counter() - started, 3)})
        while (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() not in ("close", ""):
            pass
        task_group.cancel_scope.cancel()
    emit({"closed": count})


# The measuring process. -----------------------------------------------------------------------


def raise_open_files(connections: int) -> None:
    """Raise the soft limit of open files (inherited by the server, Redis and the clients) to
    what `connections` streams need: the server holds each client's socket and, while each
    subscription holds a Redis connection of its own, as many Redis connections."""
    needed = 2 * connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        fits = max(1, (hard - SPARE_FILES) // 2)
        raise SystemExit(
            f"{connections:,} connections need about {needed:,} open files per process, and the "
            f"hard limit (ulimit -Hn) is {hard:,}: raise it (as root, `ulimit -Hn {needed}` in "
            f"the shell that runs this, LimitNOFILE= for a systemd unit, or nofile in "
            f"/etc/security/limits.conf), or pass --connections {fits}."
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settle(pid: int, budget: float = 30.0) -> float:
    """Wait until the process uses under 5% of a core over half a second (its streams have
    started reading), at most `budget` seconds; the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < budget:
        before = cpu_seconds(pid)
        await anyio.sleep(0.5)
        if cpu_seconds(pid) - before < 0.025:
            break
    return round(time.perf_counter() - started, 1)


async def redis_info(url: str) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        info: dict[str, Any] = await client.info()
        return info
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def server(env: dict[str, str], log: pathlib.Path) -> AsyncIterator[tuple[str, int]]:
    """The example app under one uvicorn process: its URL and pid, once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = await anyio.open_process(
            [sys.executable, "-m", "uvicorn", "examples.starlette_app:app", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        )  # fmt: skip
    try:
        answered = False
        async with httpx.AsyncClient(base_url=url) as client:
            with anyio.move_on_after(30):
                while process.returncode is None and not answered:
                    with contextlib.suppress(httpx.TransportError):
                        answered = (await client.get("/badges")).status_code == 200
                    await anyio.sleep(0.1)
        if not answered:
            raise RuntimeError(f"uvicorn did not serve the app: {tail(log)}")
        yield url, process.pid
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


def tail(log: pathlib.Path) -> str:
    return log.read_text()[-3000:]


async def probe(url: str, count: int, rate: float, users: int) -> tuple[float, list[float]]:
    """`count` GETs of `/users/{id}/badges` of random users, one at a time, started `rate` a
    second on one keep-alive connection; the seconds it took and each latency."""
    rng = random.Random(7)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        start = time.perf_counter()
        for i in range(count):
            await anyio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            path = f"/users/{user_of(rng.randrange(users))}/badges"
            began = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status_code}")
        return time.perf_counter() - start, latencies


class Clients:
    """The client processes, and what they have printed so far."""

    def __init__(self) -> None:
        self.processes: list[anyio.abc.Process] = []
        self.ready: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.closed = 0
        self.changed = anyio.Event()

    async def start(
        self, task_group: anyio.abc.TaskGroup, url: str, users: int, processes: int, last: str
    ) -> None:
        share = -(-users // processes)
        for first in range(0, users, share):
            count = min(share, users - first)
            process = await anyio.open_process(
                [sys.executable, __file__, "--role", "clients", "--url", url, "--first",
                 str(first), "--connections", str(count), "--last-id", last],
                stderr=None,
            )  # fmt: skip
            self.processes.append(process)
            task_group.start_soon(self.read, process)

    async def read(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
            while True:
                record = json.loads(await lines.receive_until(b"\n", 1 << 20))
                if "event" in record:
                    self.events.append(record)
                elif "ready" in record:
                    self.ready.append(record)
                elif "closed" in record:
                    self.closed += 1
                else:
                    self.errors.append(record)
                self.changed.set()
                self.changed = anyio.Event()

    async def wait(self, done: Any, budget: float) -> bool:
        """Wait until `done()`, at most `budget` seconds; whether it is."""
        with anyio.move_on_after(budget):
            while not done():
                if any(p.returncode is not None for p in self.processes) and not done():
                    await anyio.sleep(0.2)  # Its last lines may be on their way.
                    return bool(done())
                await self.changed.wait()
        return bool(done())

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await process.stdin.send(b"close\n")
        await self.wait(lambda: self.closed == len(self.processes), 30)
        for process in self.processes:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                await process.wait()


async def award(users: list[str], count: int, rate: float) -> tuple[float, dict[int, Any]]:
    """`count` grants of `BADGE` to users drawn from `users`, one at a time, started `rate` a
    second: the seconds it took, and each award's user and times by award id.

    The commit time of an award is taken as this process's `time.time()` just after
    `grant()` returned: it returns after the commit and after the notice's XADD (one round trip
    to Redis), so that latency leaves out that round trip and nothing else. The award's own
    `awarded_at` is taken before the insert: latency from it (printed beside) also counts the
    insert and the commit. Both clocks are this machine's."""
    rng = random.Random(42)
    granted: dict[int, Any] = {}
    start = time.perf_counter()
    for i in range(count):
        await anyio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        user = rng.choice(users)
        began = time.time()
        result = await badges.grant(user, BADGE, reason=f"W6 award {i}")
        returned = time.time()
        assert result is not None and result.id is not None  # A `multiple` badge: always new.
        granted[result.id] = {"user": user, "began": began, "returned": returned}
    return time.perf_counter() - start, granted


def deliveries(
    granted: dict[int, Any], events: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], list[float], list[float]]:
    """What arrived where: counts of lost, duplicated, misdelivered and unknown notices, and
    each award's latency from `grant()`'s return and from its `awarded_at`, in seconds."""
    received: dict[int, list[dict[str, Any]]] = {}
    misdelivered = unknown = 0
    for event in events:
        mine = granted.get(event["award"])
        if mine is None:
            unknown += 1
        elif event["event"] != mine["user"] or event["user"] != mine["user"]:
            misdelivered += 1
        else:
            received.setdefault(event["award"], []).append(event)
    latencies, from_awarded_at = [], []
    for award_id, mine in granted.items():
        got = received.get(award_id)
        if got:
            first = min(e["received"] for e in got)
            latencies.append(first - mine["returned"])
            at = got[0]["awarded_at"]
            from_awarded_at.append(first - datetime.datetime.fromisoformat(at).timestamp())
    counts = {
        "lost": sum(award_id not in received for award_id in granted),
        "duplicated": sum(len(got) - 1 for got in received.values()),
        "misdelivered": misdelivered,
        "unknown": unknown,
        "once": sum(len(got) == 1 for got in received.values()),
    }
    return counts, latencies, from_awarded_at


async def run(args: argparse.Namespace) -> int:
    raise_open_files(args.connections)
    base = {"impl": "abadges", "database": args.database, "connections": args.connections}
    failed = False
    with tempfile.TemporaryDirectory(prefix="abadges-w6-") as directory:
        async with RedisServer() as redis_server, database(args.database) as database_url:
            env = {
                **os.environ,
                "ABADGES_DATABASE_URL": database_url,
                "ABADGES_REDIS_URL": redis_server.url,
                "ABADGES_NOTICES": "true",
                "PYTHONPATH": str(ROOT),
            }
            # This process grants with the default registry, configured as the app is.
            os.environ.update(env)
            from examples import api, store  # noqa: F401  (registers the example's badges)

            async with badges.lifespan():
                await store.create_tables()
                log = pathlib.Path(directory) / "uvicorn.log"
                async with server(env, log) as (url, pid):
                    failed = await measure(args, base, url, pid, redis_server.url)
                if "Traceback" in tail(log):
                    print(f"The server logged errors:\n{tail(log)}", file=sys.stderr)
    return 1 if failed else 0


async def measure(
    args: argparse.Namespace, base: dict[str, Any], url: str, pid: int, redis_url: str
) -> bool:
    """The three phases against the server at `url`; whether anything failed."""
    n = args.connections
    users = [user_of(i) for i in range(n)]

    def get_result(phase: str, seconds: float, latencies: list[float]) -> dict[str, Any]:
        return workload.measure(
            "W6 GET", base["impl"], base["database"], seconds, latencies, phase=phase,
            streams=0 if phase == "no streams" else n,
            max_ms=workload.percentile(latencies, 1.0),
        )  # fmt: skip

    # Warm-up (imports on first use, the pools), then the server without streams.
    await probe(url, 20, 100.0, n)
    seconds, latencies = await probe(url, args.probes, args.probe_rate, n)
    workload.report(get_result("no streams", seconds, latencies))
    await settle(pid)
    rss_before = rss_mb(pid)
    redis_before = await redis_info(redis_url)

    # Every stream gets every notice after the stream's end as it is now (nothing yet): none
    # can be missed by a stream whose subscription starts reading after the first grants.
    client = redis.asyncio.Redis.from_url(redis_url)
    newest = await client.xrevrange(STREAM, count=1)
    await client.aclose()
    last_id = newest[0][0].decode() if newest else "0-0"

    crowd = Clients()
    async with anyio.create_task_group() as task_group:
        started = time.perf_counter()
        await crowd.start(task_group, url, n, args.client_processes, last_id)
        ready = await crowd.wait(
            lambda: len(crowd.ready) == len(crowd.processes) or crowd.errors, args.open_timeout
        )
        open_seconds = time.perf_counter() - started
        if not ready or crowd.errors:
            print(f"Not every stream opened: {crowd.errors[:5]}", file=sys.stderr)
            await crowd.close()
            task_group.cancel_scope.cancel()
            return True
        settled = await settle(pid)
        rss_open = rss_mb(pid)
        redis_open = await redis_info(redis_url)
        workload.report({
            "workload": "W6 memory", **base, "rss_before_mb": rss_before, "rss_open_mb": rss_open,
            "kb_per_connection": round((rss_open - rss_before) * 1024 / n, 1),
            "open_s": round(open_seconds, 1), "settle_s": settled,
            "redis_clients_before": redis_before["connected_clients"],
            "redis_clients_open": redis_open["connected_clients"],
        })  # fmt: skip

        seconds, latencies = await probe(url, args.probes, args.probe_rate, n)
        workload.report(get_result("streams open, idle", seconds, latencies))

        # The grants, and the probes beside them.
        probed: list[Any] = []
        cpu_before, redis_cpu = cpu_seconds(pid), redis_cpu_seconds(redis_open)

        async def probing() -> None:
            probed.extend(await probe(url, args.probes, args.probe_rate, n))

        async with anyio.create_task_group() as phase:
            phase.start_soon(probing)
            award_seconds, granted = await award(users, args.awards, args.rate)
        await crowd.wait(lambda: len(crowd.events) >= len(granted), args.drain_timeout)
        await anyio.sleep(1.0)  # Long enough for a duplicate to show.
        server_cpu = cpu_seconds(pid) - cpu_before
        redis_cpu = redis_cpu_seconds(await redis_info(redis_url)) - redis_cpu
        rss_awarded = rss_mb(pid)
        workload.report(get_result("streams open, during the grants", *probed))

        counts, delivered, from_awarded_at = deliveries(granted, crowd.events)
        result = workload.measure(
            "W6 delivery", base["impl"], base["database"], award_seconds, delivered,
            counts["once"], len(granted), connections=n, rate=args.rate,
            max_ms=workload.percentile(delivered, 1.0) if delivered else None,
            **{k: v for k, v in counts.items() if k != "once"},
            awarded_at_p50_ms=workload.percentile(from_awarded_at, 0.5) if delivered else None,
            awarded_at_p99_ms=workload.percentile(from_awarded_at, 0.99) if delivered else None,
            server_cpu_s=round(server_cpu, 2), redis_cpu_s=round(redis_cpu, 2),
            rss_after_mb=rss_awarded, stream_errors=len(crowd.errors),
        )  # fmt: skip
        result["ok"] = (
            counts["once"] == len(granted)
            and not counts["duplicated"] + counts["misdelivered"] + counts["unknown"]
            and not crowd.errors
        )
        workload.report(result)
        await crowd.close()
        task_group.cancel_scope.cancel()
    return not result["ok"]


def redis_cpu_seconds(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="streams open at once")
    parser.add_argument("--awards", type=int, default=200, help="grants to measure")
    parser.add_argument("--rate", type=float, default=20.0, help="grants a second")
    parser.add_argument("--probes", type=int, default=300, help="GET requests a phase")
    parser.add_argument("--probe-rate", type=float, default=30.0, help="GET requests a second")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help="20 streams, 10 grants")
    # A client process of a run: its streams from user `--first`, after `--last-id`.
    parser.add_argument("--role", choices=["measure", "clients"], default="measure")
    parser.add_argument("--url")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--last-id", default="0-0")
    args = parser.parse_args(argv)
    if args.smoke:
        args.connections, args.awards, args.probes, args.client_processes = 20, 10, 20, 1
    return args


def main() -> int:
    args = parse()
    if args.role == "clients":
        anyio.run(clients, args.url, args.first, args.connections, args.last_id)
        return 0
    return anyio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
