"""A private PgBouncer on a free port in front of the suite's PostgreSQL, for
`tests/test_pgbouncer.py`: Debian's `pgbouncer` binary, a configuration file in a temporary
directory, any database name passed through to the server."""

from __future__ import annotations

import os
import pathlib
import shutil

import anyio
import databases

from tests.faults.servers import Server


def find_pgbouncer() -> str | None:
    """The installed `pgbouncer` binary (Debian puts it in /usr/sbin), if any."""
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    return found if os.access(found, os.X_OK) else None


class PgBouncer(Server):
    """`pgbouncer` in `pool_mode`, with `pool_size` server connections per database, pooling
    connections to the PostgreSQL of `server_url`."""

    name = "pgbouncer"

    def __init__(self, binary: str, server_url: str, pool_mode: str, pool_size: int) -> None:
        super().__init__()
        self.binary = binary
        self.server = databases.DatabaseURL(server_url)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        # PgBouncer refuses to run as root: run it as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.config = self.directory / "pgbouncer.ini"

    def url(self, database: str, query: str = "") -> str:
        """The URL of `database` through the pooler, with `query` (`?...`) appended."""
        return (
            f"postgresql+asyncpg://{self.server.username}@127.0.0.1:{self.port}/{database}{query}"
        )

    async def start(self) -> None:
        server = self.server
        target = f"host={server.hostname} port={server.port or 5432} user={server.username}"
        if server.password:
            target += f" password={server.password}"
        # Clients are trusted (the auth file only lists who may log in); the server login is
        # the suite's own. Every database name goes through to the same server.
        users = self.directory / "users.txt"
        users.write_text(f'"{server.username}" ""\n')
        self.config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = {target}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {users}",
                    f"pool_mode = {self.pool_mode}",
                    f"default_pool_size = {self.pool_size}",
                    "max_client_conn = 1000",
                    # A client that waits longer for a server connection fails, instead of
                    # after the default two minutes.
                    "query_wait_timeout = 10",
                    "",
                ]
            )
        )
        if self.user is not None:
            for path in (self.directory, users, self.config):
                shutil.chown(path, self.user)
        await super().start()

    def command(self) -> list[str]:
        return [self.binary, str(self.config)]

    async def ready(self) -> bool:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", self.port)
        except OSError:
            return False
        await stream.aclose()
        return True

    def log(self) -> str:
        """What PgBouncer has logged so far."""
        return pathlib.Path(self.directory / f"{self.name}.log").read_text()
