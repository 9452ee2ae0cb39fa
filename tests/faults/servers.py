"""Private servers for the fault runs, which stop and restart them: a PostgreSQL cluster of its
own (initdb into a temporary directory) and a Redis that keeps its data across a restart."""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import asyncpg  # type: ignore[import-untyped]

from abadges.testing import find_redis_server, free_port


def postgres_binaries() -> pathlib.Path | None:
    """The bin/ directory of an installed PostgreSQL server (Debian's layout), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return pathlib.Path(found[-1]).parent if found else None


class Server:
    """A server process in a temporary directory; `stop()` and `start()` keep port and data."""

    name = "server"
    user: str | None = None  # Whom the process runs as; None: this process's user.

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix=f"abadges-{self.name}-"))
        self._process: anyio.abc.Process | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    async def ready(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        """Start the server and wait until it answers."""
        assert self._process is None
        log = (self.directory / f"{self.name}.log").open("ab")
        with log:
            self._process = await anyio.open_process(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, user=self.user
            )
        with anyio.move_on_after(20):
            while self._process.returncode is None:
                if await self.ready():
                    return
                await anyio.sleep(0.05)
        await self.stop()
        text = (self.directory / f"{self.name}.log").read_text()
        raise RuntimeError(f"{self.name} did not start on port {self.port}: {text[-500:]}")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server as an operator would (SIGTERM: a clean shutdown)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with anyio.CancelScope(shield=True):
                process.send_signal(sig)
                await process.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresServer(Server):
    """A PostgreSQL cluster of its own on a free port; `fast` stops abort open transactions."""

    name = "postgres"

    def __init__(self, binaries: pathlib.Path) -> None:
        super().__init__()
        self.binaries = binaries
        self.data = self.directory / "data"
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def start(self) -> None:
        if not self.data.exists():
            if self.user is not None:
                shutil.chown(self.directory, self.user)
            await anyio.run_process(
                [
                    str(self.binaries / "initdb"), "-D", str(self.data), "-U", "postgres",
                    "--auth=trust", "--no-sync", "-E", "UTF8",
                ],
                user=self.user,
            )  # fmt: skip
        await super().start()

    def command(self) -> list[str]:
        return [
            str(self.binaries / "postgres"), "-D", str(self.data),
            "-p", str(self.port), "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "max_connections=200",
        ]  # fmt: skip

    async def ready(self) -> bool:
        try:
            connection = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres", timeout=1
            )
        except (OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    async def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's fast shutdown: open transactions are rolled back."""
        await super().stop(sig)

    async def terminate_connections(self) -> int:
        """`pg_terminate_backend` every client connection but this one; how many it ended."""
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres"
        )
        try:
            ended: int = await connection.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS ended"
            )
        finally:
            await connection.close()
        return ended


class PersistentRedis(Server):
    """A redis-server with an append-only file synced on every write: a restart keeps the
    queue, as a production Redis that carries jobs must."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
            "--appendfsync", "always",
        ]  # fmt: skip

    async def ready(self) -> bool:
        try:
            async with await anyio.connect_tcp("127.0.0.1", self.port) as stream:
                await stream.send(b"PING\r\n")
                # A Redis still loading its append-only file answers -LOADING.
                return (await stream.receive()).startswith(b"+PONG")
        except OSError:
            return False
