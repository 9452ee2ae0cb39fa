"""The internals of arq and redis-py that abadges/_full_redis.py relies on to drain a full Redis.

arq is pinned exactly (pyproject.toml) and in maintenance mode. The worker adopts arq's
connection (`adopt()`) and lets the worker's bookkeeping past maxmemory (`is_bookkeeping()`):
when a release changes what arq hands to `on_startup` or what it writes, these tests say what,
before a full Redis stalls the queue again.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import redis.asyncio
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.asyncio.client import Pipeline
from redis.exceptions import ExecAbortError, OutOfMemoryError, ResponseError

import abadges._full_redis
import abadges.worker
from abadges import Badge, BadgeAwarded, BadgeRegistry
from abadges.testing import RedisServer
from abadges.worker import worker_settings
from tests.support import push

CHANGED = "arq changed: abadges/_full_redis.py relies on"


class SeenBadge(Badge):
    slug = "seen"
    levels = ["Seen"]
    events = ["visited"]
    deferred = True

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class FlakyBadge(SeenBadge):
    """Raises a connection error on its first call: one retry."""

    slug = "flaky"
    calls = 0

    def award(self, **state: Any) -> BadgeAwarded:
        type(self).calls += 1
        if type(self).calls == 1:
            raise ConnectionResetError("connection reset by peer")
        return BadgeAwarded()


class FailingBadge(SeenBadge):
    slug = "failing"

    def award(self, **state: Any) -> BadgeAwarded:
        raise ValueError("no award")


def test_redis_py_builds_pipelines_from_a_pool_and_callbacks() -> None:
    parameters = list(inspect.signature(Pipeline.__init__).parameters)
    assert parameters == [
        "self",
        "connection_pool",
        "response_callbacks",
        "transaction",
        "shard_hint",
    ], f"redis-py changed: _WorkerPipeline calls Pipeline({parameters[1:]})."


async def test_the_worker_hands_its_own_connection_to_on_startup(
    registry: BadgeRegistry,
) -> None:
    registry.register(SeenBadge)
    seen: list[Any] = []

    async def on_startup(ctx: dict[str, Any]) -> None:
        seen.append(ctx["redis"])

    settings = worker_settings(registry, burst=True, handle_signals=False, on_startup=on_startup)
    worker = Worker(**settings)
    try:
        await worker.async_run()
        [pool] = seen
        assert pool is worker.pool, f"{CHANGED} ctx['redis'] being the worker's own pool."
        assert type(pool) is abadges._full_redis.WorkerRedis, (
            f"{CHANGED} the worker's pool being an ArqRedis; it is a {type(pool).__name__}."
        )
    finally:
        await worker.pool.delete(worker.health_check_key)
        await worker.pool.aclose()


async def test_every_write_of_the_worker_is_bookkeeping(
    registry: BadgeRegistry, redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What arq writes while jobs succeed, are retried, fail, exceed their tries or cannot be
    read: every command of its transactions (a full Redis refuses them all) and every plain
    command that Redis refuses on a full Redis (`denyoom`) is one `is_bookkeeping()` lets past
    maxmemory, and arq WATCHes only claims."""
    transactions: list[tuple[list[Any], list[Any]]] = []
    commands: list[tuple[Any, ...]] = []
    execute = abadges._full_redis.WorkerPipeline.execute
    execute_command = abadges._full_redis.WorkerRedis.execute_command

    async def record_execute(
        self: abadges._full_redis.WorkerPipeline, raise_on_error: bool = True
    ) -> list[Any]:
        transactions.append(([args for args, _ in self.command_stack], list(self._watched)))
        return await execute(self, raise_on_error)

    async def record_command(
        self: abadges._full_redis.WorkerRedis, *args: Any, **options: Any
    ) -> Any:
        commands.append(args)
        return await execute_command(self, *args, **options)

    monkeypatch.setattr(abadges._full_redis.WorkerPipeline, "execute", record_execute)
    monkeypatch.setattr(abadges._full_redis.WorkerRedis, "execute_command", record_command)
    FlakyBadge.calls = 0
    for badge in (SeenBadge, FlakyBadge, FailingBadge):
        registry.register(badge)
    await registry.possibly_award_badge("visited", user="ana")
    await push(redis_url, queue_name, b"not json")
    # A second worker finds a job tried too often already.
    settings = worker_settings(registry, burst=True, handle_signals=False, poll_delay=0.05)
    worker = Worker(**settings)
    try:
        await worker.async_run()
    finally:
        await worker.pool.delete(worker.health_check_key)
        await worker.pool.aclose()
    await registry.possibly_award_badge("visited", user="bob")
    worker = Worker(**{**settings, "max_tries": 0})
    try:
        await worker.async_run()
    finally:
        await worker.pool.delete(worker.health_check_key)
        await worker.pool.aclose()

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        flags = {name: info["flags"] for name, info in (await client.command()).items()}
    finally:
        await client.aclose()
    names = set()
    for stack, watched in transactions:
        for args in stack:
            names.add(str(args[0]).upper())
            assert abadges._full_redis.is_bookkeeping(args, queue_name), (
                f"{CHANGED} arq's transactions being bookkeeping; it now runs {args[:2]}."
            )
        assert all(str(key).startswith(in_progress_key_prefix) for key in watched), (
            f"{CHANGED} arq WATCHing only claims; it now watches {watched}."
        )
    for args in commands:
        if "denyoom" in flags[str(args[0]).split()[0].lower()]:
            assert abadges._full_redis.is_bookkeeping(args, queue_name), (
                f"{CHANGED} arq's writes being bookkeeping; it now writes {args[:2]}."
            )
    # The run went through each of arq's transactions: claim, start, retry, finish, failure.
    assert {"PSETEX", "GET", "INCRBY", "EXPIRE", "ZINCRBY", "DEL", "ZREM"} <= names
    assert not abadges._full_redis.is_bookkeeping(("SET", "arq:result:job", "x"), queue_name)
    assert not abadges._full_redis.is_bookkeeping(("ZADD", queue_name, 1, "job"), queue_name)
    assert not abadges._full_redis.is_bookkeeping(("ZINCRBY", "other", 1, "job"), queue_name)
    assert not abadges._full_redis.is_bookkeeping(("INCRBY",), queue_name)


async def test_redis_refusing_a_transaction_at_exec_for_memory_is_out_of_memory(
    redis_server: RedisServer,
) -> None:
    """Redis 7 checks memory at EXEC too: commands queued while it had room are refused as a
    whole with EXECABORT, which redis-py raises as ExecAbortError; the worker's pipeline takes
    it for the OutOfMemoryError it is. A transaction aborted for another reason is not."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    connection = await client.connection_pool.get_connection()
    try:
        errors = []
        for queued, full in ((("SET", "k", "v"), True), (("SET", "k"), False)):
            await connection.send_command("MULTI")
            assert await connection.read_response() == b"OK"
            await connection.send_command(*queued)
            if full:
                assert await connection.read_response() == b"QUEUED"
                await client.config_set("maxmemory", 1)
            else:
                with pytest.raises(ResponseError, match="wrong number of arguments"):
                    await connection.read_response()
            await connection.send_command("EXEC")
            with pytest.raises(ExecAbortError) as caught:
                await connection.read_response()
            errors.append(caught.value)
            await client.config_set("maxmemory", 0)
    finally:
        await client.config_set("maxmemory", 0)
        await client.connection_pool.release(connection)
        await client.aclose()
    oom, other = errors
    converted = abadges._full_redis.out_of_memory(oom)
    assert isinstance(converted, OutOfMemoryError) and converted.__cause__ is oom
    assert "OOM command not allowed" in str(converted)
    assert abadges._full_redis.out_of_memory(other) is None
    refused = OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")
    assert abadges._full_redis.out_of_memory(refused) is refused
