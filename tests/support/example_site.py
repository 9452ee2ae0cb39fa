"""The example apps on a real port, and a JSON call to them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import redis.asyncio
import uvicorn
from aiohttp.test_utils import TestServer

from abadges.testing import free_port
from examples import aiohttp_app, quart_app, starlette_app

FRAMEWORKS = ["starlette", "quart", "aiohttp"]


@contextlib.asynccontextmanager
async def serve(framework: str) -> AsyncIterator[httpx.AsyncClient]:
    """The framework's example app on a real port, lifespan included; a client for it."""
    if framework == "aiohttp":
        server = TestServer(aiohttp_app.create_app(), host="127.0.0.1")
        await server.start_server()
        try:
            async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
                yield client
        finally:
            await server.close()
        return
    app = starlette_app.app if framework == "starlette" else quart_app.app
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(uvicorn_server.serve)
        with anyio.fail_after(10):
            while not uvicorn_server.started:  # noqa: ASYNC110 - uvicorn offers no event.
                await anyio.sleep(0.02)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
        finally:
            uvicorn_server.should_exit = True


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    """The JSON answer to a request, which must have `status`."""
    response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


class EventStream:
    """The server-sent events of a streaming response, read one at a time, each within
    `WAIT` seconds."""

    WAIT = 10

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next_event(self) -> list[tuple[str, str]]:
        """The fields of the next event, in the order the stream gives them; comments
        between events are passed over."""
        while True:
            kind, read = await self.next_item()
            if kind == "event":
                assert isinstance(read, list)
                return read

    async def next_item(self) -> tuple[str, list[tuple[str, str]] | str]:
        """The next event ("event", its fields), or comment line ("comment", the line)."""
        fields: list[tuple[str, str]] = []
        with anyio.fail_after(self.WAIT):
            async for line in self._lines:
                if not line:
                    if fields:
                        return "event", fields
                    continue
                if line.startswith(":"):
                    assert not fields, f"A comment {line!r} inside an event: {fields}"
                    return "comment", line
                name, _, value = line.partition(":")
                fields.append((name, value.removeprefix(" ")))
        raise AssertionError(f"The stream ended; the last fields read were {fields}.")


async def subscriptions(redis_url: str) -> list[str]:
    """The last command of each connection that reads the stream: a subscription runs
    XREVRANGE to find where the stream ends, then XREAD, blocking, again and again."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return [c["cmd"] for c in clients if c["cmd"] in ("xread", "xrevrange")]


async def wait_for_subscriptions(redis_url: str, count: int) -> None:
    """Wait until `count` subscriptions read the stream (XREAD: their position is fixed, so
    that anything published from now on reaches them), or are gone for 0."""
    with anyio.fail_after(10):
        while await subscriptions(redis_url) != ["xread"] * count:  # noqa: ASYNC110
            await anyio.sleep(0.02)
