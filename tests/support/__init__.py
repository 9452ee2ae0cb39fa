"""Types and helpers shared by the tests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest
import redis.asyncio
from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from abadges import BadgeErrorGroup, BadgeRegistry, QueueUnavailableError
from abadges.jobs import JOB_NAME, loads
from abadges.testing import free_port

E = TypeVar("E", bound=BaseException)

ARQ = str(pathlib.Path(sys.executable).parent / "arq")
#: Under CI every database must be exercised: a server that does not answer fails the run.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

#: The `stored_rows` fixture: reads (user_id, slug, level) of every stored award, in id order.
Rows = Callable[[], Awaitable[list[tuple[str, str, int]]]]


class TcpProxy:
    """Forwards a 127.0.0.1 port to a server's port: `stop()` cuts every connection and
    refuses new ones, as a server that went down would; `start()` listens again, same port.

    Create it in the test's own task, with the task group that will run it.
    """

    def __init__(self, task_group: anyio.abc.TaskGroup, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._task_group = task_group
        self._scope: anyio.CancelScope | None = None

    async def start(self) -> None:
        self._scope = anyio.CancelScope()
        await self._task_group.start(self._serve, self._scope)

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def _serve(
        self, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        with scope:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
            async with listener:
                task_status.started()
                await listener.serve(self._forward)

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as server:
            async with anyio.create_task_group() as task_group:

                async def pipe(
                    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream
                ) -> None:
                    # A side that resets its end (a client dropping a connection it gave up
                    # on) ends this connection only, as with a real server.
                    with contextlib.suppress(anyio.BrokenResourceError, OSError):
                        async for chunk in source:
                            await sink.send(chunk)
                    task_group.cancel_scope.cancel()

                task_group.start_soon(pipe, client, server)
                task_group.start_soon(pipe, server, client)


@contextlib.asynccontextmanager
async def worker(
    env: dict[str, str], log: pathlib.Path, settings: str = "abadges.worker.Settings"
) -> AsyncIterator[anyio.abc.Process]:
    """`arq <settings>` in a process of its own, its output going to `log`; SIGTERM on exit,
    which lets the jobs it is running finish first."""
    with log.open("ab") as output:
        process = await anyio.open_process(
            [ARQ, settings], env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    try:
        yield process
    finally:
        await stop(process)


async def stop(process: anyio.abc.Process) -> None:
    """SIGTERM, which lets an arq worker finish its jobs; SIGKILL if it still runs 30 s later."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(30):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def only_error(caught: pytest.ExceptionInfo[BadgeErrorGroup], kind: type[E]) -> E:
    """The one error in a caught `BadgeErrorGroup`, checked to be a `kind`."""
    [error] = caught.value.exceptions
    assert isinstance(error, kind), error
    return error


async def queued_payloads(redis_url: str, queue_name: str) -> list[Any]:
    """The payloads of the abadges jobs waiting in the queue, oldest first."""
    redis = ArqRedis.from_url(redis_url)
    redis.job_deserializer = loads
    try:
        jobs = await redis.queued_jobs(queue_name=queue_name)
    finally:
        await redis.aclose()
    assert {job.function for job in jobs} <= {JOB_NAME}
    return [job.args[0] for job in jobs]


async def push(redis_url: str, queue_name: str, data: bytes) -> str:
    """Put raw bytes into the queue as a job, as anything with access to Redis could."""
    job_id = uuid.uuid4().hex
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.psetex(job_key_prefix + job_id, 60_000, data)
        await client.zadd(queue_name, {job_id: time.time() * 1000})
    finally:
        await client.aclose()
    return job_id


async def queued_ids(redis_url: str, queue_name: str) -> list[str]:
    """The ids of the jobs in the queue, oldest first."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return [job_id.decode() for job_id in await client.zrange(queue_name, 0, -1)]
    finally:
        await client.aclose()


def award_jobs(keys: list[Any]) -> list[Any]:
    """The job ids or keys among `keys` that are not the periodic expiry job's: arq queues that
    one every minute, and keeps its claim for a minute after it ran."""
    return [key for key in keys if b":abadges.expire:" not in key]


async def wait_until_drained(redis_url: str, queue_name: str) -> None:
    """Wait until other processes have emptied the queue."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        # Other processes empty the queue: there is no event to wait on, so poll.
        while award_jobs(await client.zrange(queue_name, 0, -1)):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    finally:
        await client.aclose()


async def answers(port: int) -> bool:
    """Does a Redis answer PING on this 127.0.0.1 port?"""
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except (OSError, redis.exceptions.RedisError):
        return False
    finally:
        await client.aclose()


async def fill_to_the_brim(registry: BadgeRegistry, event: str, room: int = 2_500_000) -> int:
    """Give the Redis `registry` queues in `maxmemory` (noeviction) `room` bytes above what it
    uses, queue `event` for users u0, u1, ... with 10 kB of state each until Redis refuses a job
    for memory, then lower `maxmemory` 200 kB below what Redis uses: connections that close free
    their buffers, and must not give it room again. How many jobs were queued."""
    client = redis.asyncio.Redis.from_url(registry.settings.redis_url)
    try:
        used = (await client.info("memory"))["used_memory"]
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", used + room)
        for queued in range(room // 10_000 * 2):
            try:
                await registry.possibly_award_badge(event, user=f"u{queued}", note="x" * 10_000)
            except BadgeErrorGroup as group:
                [error] = group.exceptions
                assert isinstance(error, QueueUnavailableError), error
                assert "OutOfMemoryError" in str(error), error
                break
        else:
            raise AssertionError(f"Redis took more than {room} bytes of jobs.")
        used = (await client.info("memory"))["used_memory"]
        await client.config_set("maxmemory", used - 200_000)
    finally:
        await client.aclose()
    return queued
