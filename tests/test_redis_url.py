"""`ABADGES_REDIS_URL`, read the same way by the app and by the worker: passwords with every
reserved character, passwords in the query, ACL users, TLS with a private CA and without
verification, Unix sockets, each against a private `redis-server` with a real `arq` worker
process; and the options the worker cannot take, refused at start-up."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import anyio
import anyio.abc
import pytest
import redis.asyncio
from arq.connections import RedisSettings
from redis.asyncio.connection import SSLConnection

from abadges import BadgeRegistry, ConfigurationError, Settings
from abadges.redis_url import OPTIONS, arq_settings, redis_client, redis_options
from abadges.testing import find_redis_server, free_port
from tests.support import ARQ, worker
from tests.support.deferred_badges import VisitorBadge

ROOT = pathlib.Path(__file__).parent.parent
#: Every character RFC 3986 reserves, the percent sign, a quote and a space.
PASSWORD = ":/?#[]@!$&'()*+,;=% p\"w"


def encoded(text: str) -> str:
    """`text` percent-encoded for the userinfo of a URL, as a password generator's must be."""
    return quote(text, safe="")


class PrivateRedis:
    """A `redis-server` of the test's own, started with `args`, in a scratch directory."""

    def __init__(self, directory: pathlib.Path, *args: str) -> None:
        self.directory = directory
        self.args = args
        self.log = directory / "redis.log"
        self.process: anyio.abc.Process | None = None

    async def start(self) -> None:
        self.process = await anyio.open_process(
            [
                find_redis_server(),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.log),
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with anyio.fail_after(10):
            # Redis 7.0 says "Ready to accept connections" for TCP, "The server is now ready
            # to accept connections at <path>" for a socket.
            while "eady to accept connections" not in (
                self.log.read_text() if self.log.exists() else ""
            ):
                assert self.process.returncode is None, self.log.read_text()
                await anyio.sleep(0.02)

    async def stop(self) -> None:
        if self.process is not None:
            with anyio.CancelScope(shield=True):
                self.process.terminate()
                await self.process.wait()


@contextlib.asynccontextmanager
async def private_redis(directory: pathlib.Path, *args: str) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(directory, *args)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_certificates(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A self-signed CA, and a certificate it signed for 127.0.0.1 and localhost (openssl)."""
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key", "csr")}
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "authorityKeyIdentifier = keyid\n"
    )
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *key, "-keyout", paths["ca-key"], "-out", paths["ca"], "-days", "1",
         "-subj", "/CN=abadges test CA"],
        ["req", "-new", *key, "-keyout", paths["key"], "-out", paths["csr"],
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", paths["csr"], "-CA", paths["ca"], "-CAkey", paths["ca-key"],
         "-CAcreateserial", "-out", paths["cert"], "-days", "1", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return paths


#: A case: starts a private server in the directory and yields the URL to reach it by.
Case = Callable[[pathlib.Path], contextlib.AbstractAsyncContextManager[str]]


@contextlib.asynccontextmanager
async def reserved_password(directory: pathlib.Path) -> AsyncIterator[str]:
    port = free_port()
    async with private_redis(directory, "--port", str(port), "--requirepass", PASSWORD):
        yield f"redis://:{encoded(PASSWORD)}@127.0.0.1:{port}/0"


@contextlib.asynccontextmanager
async def password_in_the_query(directory: pathlib.Path) -> AsyncIterator[str]:
    port = free_port()
    async with private_redis(directory, "--port", str(port), "--requirepass", PASSWORD):
        # redis-py decodes query values twice (parse_qs, then unquote): encoded twice.
        yield f"redis://127.0.0.1:{port}/3?password={encoded(encoded(PASSWORD))}"


@contextlib.asynccontextmanager
async def acl_user(directory: pathlib.Path) -> AsyncIterator[str]:
    port = free_port()
    async with private_redis(directory, "--port", str(port)):
        # The default user is then off: only the user name and its password get in.
        client = redis.asyncio.Redis(port=port)
        await client.acl_setuser(
            "app", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"],
            commands=["+@all"],
        )  # fmt: skip
        await client.acl_setuser("default", enabled=False)
        await client.aclose()
        yield f"redis://app:{encoded(PASSWORD)}@127.0.0.1:{port}?db=2"


def tls(directory: pathlib.Path, port: int) -> list[str]:
    paths = make_certificates(directory)
    return [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(paths["cert"]),
        "--tls-key-file", str(paths["key"]),
        "--tls-ca-cert-file", str(paths["ca"]),
        "--tls-auth-clients", "no",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def tls_with_a_private_ca(directory: pathlib.Path) -> AsyncIterator[str]:
    port = free_port()
    async with private_redis(directory, *tls(directory, port), "--requirepass", PASSWORD):
        ca = quote(str(directory / "ca.pem"))
        yield (
            f"rediss://:{encoded(PASSWORD)}@127.0.0.1:{port}/1"
            f"?ssl_ca_certs={ca}&ssl_check_hostname=true"
        )


@contextlib.asynccontextmanager
async def tls_unverified(directory: pathlib.Path) -> AsyncIterator[str]:
    port = free_port()
    async with private_redis(directory, *tls(directory, port)):
        yield f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none"


@contextlib.asynccontextmanager
async def unix_socket(directory: pathlib.Path) -> AsyncIterator[str]:
    # A socket path has at most 107 bytes: pytest's tmp_path can be longer.
    sockets = pathlib.Path(tempfile.mkdtemp(prefix="abadges-"))
    path = sockets / "redis.sock"
    args = ["--port", "0", "--unixsocket", str(path), "--requirepass", PASSWORD]
    try:
        async with private_redis(directory, *args):
            yield f"unix://:{encoded(PASSWORD)}@{path}?db=4"
    finally:
        shutil.rmtree(sockets)


CASES = [
    reserved_password,
    password_in_the_query,
    acl_user,
    tls_with_a_private_ca,
    tls_unverified,
    unix_socket,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
async def test_the_app_queues_and_a_worker_process_awards_through_the_same_url(
    case: Case, tmp_path: pathlib.Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}"
    queue_name = "abadges:test:url"
    async with case(tmp_path) as url:
        registry = BadgeRegistry()
        registry.configure(database_url=database_url, redis_url=url, queue_name=queue_name)
        registry.register(VisitorBadge)
        async with registry.lifespan():
            await registry.create_tables()
            assert await registry.possibly_award_badge("visited", user="ana") == []
            # redis-py's own reading of the URL, to watch the queue.
            client = redis.asyncio.Redis.from_url(url)
            assert await client.zcard(queue_name) == 1
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "ABADGES_DATABASE_URL": database_url,
                "ABADGES_REDIS_URL": url,
                "ABADGES_QUEUE_NAME": queue_name,
                "ABADGES_BADGES": "tests.support.deferred_worker",
                "ABADGES_USER_LOADER": "tests.support.deferred_badges:load_user",
                "ABADGES_TEST_STATE_DIR": str(tmp_path),
                "ABADGES_TEST_TODAY": "2024-06-30",
            }
            log = tmp_path / "worker.log"
            try:
                async with worker(env, log) as process:
                    with anyio.fail_after(20):
                        while await client.zcard(queue_name):
                            assert process.returncode is None, log.read_text()[-2000:]
                            await anyio.sleep(0.05)
            finally:
                await client.aclose()
            awards = await registry.awards_for("ana")
        assert [award.slug for award in awards] == ["visitor"], log.read_text()[-2000:]
        output = log.read_text()
        assert PASSWORD not in output
        assert encoded(PASSWORD) not in output


URLS = [
    f"redis://:{encoded(PASSWORD)}@127.0.0.1:6380/2",
    f"redis://app:{encoded(PASSWORD)}@[::1]?db=5&socket_connect_timeout=2.5",
    f"redis://cache?password={encoded(encoded(PASSWORD))}&max_connections=20",
    "redis://cache/?retry_on_timeout=yes",
    "rediss://cache:6380?ssl_ca_certs=%2Fetc%2Fca.pem&ssl_cert_reqs=optional"
    "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_check_hostname=true",
    "rediss://:pw@cache?ssl_cert_reqs=none",
    f"unix://:{encoded(PASSWORD)}@/run/redis%20cache.sock?db=1",
    "redis://",
]


@pytest.mark.parametrize("url", URLS)
def test_the_app_the_worker_and_redis_py_read_a_url_alike(url: str) -> None:
    """The app's client connects as `Redis.from_url()` would, and arq's settings say the same."""
    expected = redis.asyncio.Redis.from_url(url).connection_pool
    client = redis_client(url)
    pool = client.connection_pool
    assert pool.connection_class is expected.connection_class
    assert {name: pool.connection_kwargs.get(name) for name in expected.connection_kwargs} == (
        expected.connection_kwargs
    )
    settings = arq_settings(url)
    default = RedisSettings()
    given = expected.connection_kwargs
    assert settings.host == given.get("host", default.host)
    assert settings.port == given.get("port", default.port)
    assert settings.unix_socket_path == given.get("path")
    assert settings.database == given.get("db", 0)
    assert (settings.username, settings.password) == (given.get("username"), given.get("password"))
    assert settings.ssl == (expected.connection_class is SSLConnection)
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
        assert getattr(settings, name) == given.get(name, getattr(default, name))
    assert settings.ssl_check_hostname == given.get("ssl_check_hostname", False)
    assert settings.conn_timeout == given.get("socket_connect_timeout", default.conn_timeout)
    # redis-py's pool takes None for 2**31 connections.
    assert (settings.max_connections or 2**31) == expected.max_connections


def test_a_password_is_decoded_once_in_the_userinfo_and_twice_in_the_query() -> None:
    assert arq_settings(f"redis://:{encoded(PASSWORD)}@cache").password == PASSWORD
    assert arq_settings(f"redis://cache?password={encoded(encoded(PASSWORD))}").password == (
        PASSWORD
    )
    # Both given: the userinfo's wins, as in redis-py.
    assert arq_settings("redis://:first@cache?password=second").password == "first"
    assert arq_settings("redis://me@cache").username == "me"


def test_every_option_the_url_takes_reaches_both_sides() -> None:
    fields = {field.name for field in dataclasses.fields(RedisSettings)}
    arguments = inspect.signature(redis.asyncio.Redis.__init__).parameters
    for option, field in OPTIONS.items():
        assert option in arguments
        assert field in fields


REFUSED = [
    (
        "redis://:s3cret@cache?socket_timeout=5",
        "redis_url has option 'socket_timeout', which the worker cannot take: it connects with "
        "arq's RedisSettings, which has no such setting. Remove 'socket_timeout' from "
        "'redis://:***@cache?socket_timeout=5'; the options both the app and the worker take "
        "are ['db', 'max_connections', 'password', 'retry_on_timeout', 'socket_connect_timeout', "
        "'ssl_ca_certs', 'ssl_ca_data', 'ssl_cert_reqs', 'ssl_certfile', 'ssl_check_hostname', "
        "'ssl_keyfile', 'username'].",
    ),
    (
        "rediss://cache?ssl_password=s3cret&ssl_cert_reqs=none",
        "redis_url has option 'ssl_password', which the worker cannot take: it connects with "
        "arq's RedisSettings, which has no such setting. Remove 'ssl_password' from "
        "'rediss://cache?ssl_password=***&ssl_cert_reqs=none'; ",
    ),
    (
        "redis://:s3cret@cache?ssl_ca_certs=/etc/ca.pem",
        "redis_url has TLS option 'ssl_ca_certs', but 'redis://:***@cache?ssl_ca_certs=/etc/"
        "ca.pem' is not a rediss:// URL: use rediss:// to connect with TLS, or remove the option.",
    ),
    (
        "unix://:s3cret@/run/redis.sock?ssl_cert_reqs=none",
        "redis_url has TLS option 'ssl_cert_reqs', but 'unix://:***@/run/redis.sock?"
        "ssl_cert_reqs=none' is not a rediss:// URL: ",
    ),
    (
        "rediss://cache?ssl_cert_reqs=no",
        "redis_url option ssl_cert_reqs must be one of ['none', 'optional', 'required']; got 'no'.",
    ),
    (
        "redis://cache?db=one",
        "redis_url 'redis://cache?db=one' cannot be read: Invalid value for 'db' in connection "
        "URL.",
    ),
    (
        "redis://:/s3cret@cache",
        "redis_url 'redis://:***@cache' has a path that is not a database number: give the "
        "database as redis://host:6379/1 or ?db=1, and percent-encode the user name and the "
        "password (a '/' in them starts the path).",
    ),
    (
        "redis://:s3#cret@cache:6379",
        "redis_url 'redis://:***@cache:6379' cannot be read: it is malformed. Percent-encode the "
        "user name and the password (a '#', '/', '?', '@' or '[' in them must be).",
    ),
    ("redis://:s3[cret@cache", "redis_url 'redis://:***@cache' cannot be read: it is malformed."),
    (
        "unix://:s3cret@",
        "redis_url 'unix://:***@' names no socket: write unix:///path/to/redis.sock.",
    ),
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_what_the_worker_could_not_take_is_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        redis_options(url)
    assert str(caught.value).startswith(message)
    assert "s3" not in str(caught.value).replace("s3cret", "")  # No part of it either.
    assert "cret" not in str(caught.value)


def test_both_sides_refuse_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis://:s3cret@cache?health_check_interval=10"
    with pytest.raises(ConfigurationError, match="'health_check_interval', which the worker"):
        BadgeRegistry().configure(redis_url=url)
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"ABADGES_REDIS_URL": url})
    assert caught.value.__notes__ == ["The ABADGES_* variables set: ['ABADGES_REDIS_URL']."]
    assert "s3cret" not in str(caught.value)


def test_the_worker_process_refuses_an_option_it_cannot_take(tmp_path: pathlib.Path) -> None:
    env = {
        **os.environ,
        "ABADGES_REDIS_URL": "rediss://:s3cret@127.0.0.1:1?ssl_ciphers=HIGH",
        "ABADGES_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}",
    }
    done = subprocess.run(
        [ARQ, "abadges.worker.WorkerSettings"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert (
        "abadges.exceptions.ConfigurationError: redis_url has option 'ssl_ciphers', which the "
        "worker cannot take" in done.stderr
    )
    assert "s3cret" not in done.stderr + done.stdout


async def test_a_worker_with_a_wrong_password_exits_within_seconds(tmp_path: pathlib.Path) -> None:
    """A refused password ends the worker after arq's few connection tries (6 s seen), with
    redis-py's AuthenticationError and without the password."""
    async with private_redis(
        tmp_path, "--port", str(port := free_port()), "--requirepass", "right"
    ):
        (tmp_path / "abadges.sqlite3").touch()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ABADGES_REDIS_URL": f"redis://:wrong@127.0.0.1:{port}",
            "ABADGES_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'abadges.sqlite3'}",
            "ABADGES_BADGES": "tests.support.deferred_worker",
        }
        started = time.monotonic()
        done = await anyio.run_process([ARQ, "abadges.worker.WorkerSettings"], env=env, check=False)
        took = time.monotonic() - started
    output = (done.stdout + done.stderr).decode()
    assert done.returncode != 0
    assert "AuthenticationError" in output, output[-2000:]
    assert "wrong" not in output.replace("WRONGPASS", "")
    assert took < 15, f"the worker took {took:.0f}s to give up on a wrong password"
