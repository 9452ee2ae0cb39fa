"""The request side of deferred badges: the JSON codec, freezing, queueing in a real Redis,
Redis outages, and the inline mode."""

from __future__ import annotations

import datetime
import json
import pathlib
import pickle
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest
import redis.asyncio

import abadges._connection
from abadges import (
    AbadgesError,
    Badge,
    BadgeAwarded,
    BadgeErrorGroup,
    BadgeRegistry,
    ConfigurationError,
    InvalidJobError,
    InvalidStateError,
    NotConnectedError,
    QueueUnavailableError,
    UserRef,
)
from abadges.jobs import MAX_JOB_BYTES, Job, dumps, loads
from abadges.testing import RedisServer, free_port
from tests.support import Rows, only_error, queued_payloads
from tests.support.deferred_badges import AddictBadge, RegularBadge, VisitorBadge, record_visit

WHEN = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)


class PointsBadge(Badge):
    slug = "points"
    levels = ["Bronze"]
    events = ["visited"]

    def award(self, **state: Any) -> BadgeAwarded:
        return BadgeAwarded()


class StateBadge(Badge):
    """Deferred; its award() gives level 1 and keeps the state it was given."""

    slug = "state"
    levels = ["Seen"]
    events = ["visited"]
    deferred = True
    seen: list[dict[str, Any]] = []

    def award(self, **state: Any) -> BadgeAwarded:
        type(self).seen.append(state)
        return BadgeAwarded()


@pytest.fixture(autouse=True)
def state_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("ABADGES_TEST_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("ABADGES_TEST_TODAY", "2024-05-07")
    StateBadge.seen = []
    return tmp_path


# The codec -------------------------------------------------------------------------------------


def test_codec_round_trips_json() -> None:
    value = {"a": [1, 2.5, None, True, "é\ud800"], "b": {"c": "d"}}
    assert loads(dumps(value)) == value


def test_codec_stores_exceptions_as_text() -> None:
    assert loads(dumps({"r": ValueError("boom")})) == {"r": "ValueError: boom"}
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        dumps({"r": {1}})


def test_codec_never_unpickles(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (pathlib.Path.touch, (target,))

    payload = pickle.dumps(Exploit())
    with pytest.raises(InvalidJobError, match="a pickle; abadges jobs are JSON"):
        loads(payload)
    assert not target.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe garbage", "Job payload is not JSON"),
        (b"{not json", "Job payload is not JSON"),
        (b"[" * 10 + b"]" * 10, None),
        (b" " * (MAX_JOB_BYTES + 1), f"over the {MAX_JOB_BYTES}-byte limit"),
    ],
)
def test_codec_refuses_what_is_not_json(data: bytes, message: str | None) -> None:
    if message is None:
        assert loads(data) == [[[[[[[[[[]]]]]]]]]]
        return
    with pytest.raises(InvalidJobError, match=message):
        loads(data)


# Payloads --------------------------------------------------------------------------------------

VALID = {"v": 1, "key": "k" * 32, "event": "visited", "user": "42", "at": None, "badges": {}}


def test_payload_round_trips() -> None:
    job = Job("k" * 32, "visited", "42", WHEN, {"addict": {"day": "2024-05-01"}})
    assert Job.from_payload(loads(dumps(job.to_payload()))) == job
    assert Job.from_payload(VALID).awarded_at is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1], "Job payload must be a JSON object; got [1]."),
        (
            {**VALID, "v": 2},
            "Job payload version 2 is not supported; this abadges reads version 1.",
        ),
        ({"f": "x"}, "Job payload version None is not supported"),
        ({**VALID, "extra": 1}, "Job payload has fields ['at', 'badges', 'event', 'extra', "),
        ({**VALID, "key": ""}, "Job key must be a str of 1 to 64 characters; got ''."),
        ({**VALID, "key": 5}, "Job key must be a str of 1 to 64 characters; got 5."),
        ({**VALID, "event": None}, "Job event must be a str; got None."),
        ({**VALID, "user": "x" * 256}, "Job user must be a str of 1 to 255 characters; got 'xxx"),
        (
            {**VALID, "badges": {"a": 1}},
            "Job badges must map slugs to state objects; got {'a': 1}.",
        ),
        ({**VALID, "at": "yesterday"}, "Job timestamp must be null or an ISO 8601 time with its"),
        ({**VALID, "at": "2024-05-01T00:00:00"}, "Job timestamp must be null or an ISO 8601"),
        ({**VALID, "at": "9999-12-31T23:00:00-05:00"}, "Job timestamp must be null or an ISO"),
        ({**VALID, "at": "0001-01-01T00:00:00+05:00"}, "Job timestamp must be null or an ISO"),
        (
            {**VALID, "at": 5},
            "Job timestamp must be null or an ISO 8601 time with its offset, within the years 1 "
            "to 9999 in UTC; got 5",
        ),
    ],
)
def test_invalid_payloads_are_refused(payload: object, message: str) -> None:
    with pytest.raises(InvalidJobError) as caught:
        Job.from_payload(payload)
    assert str(caught.value).startswith(message)


# Queueing in Redis -----------------------------------------------------------------------------


async def test_an_event_costs_one_job_for_all_its_deferred_badges(
    registry: BadgeRegistry, redis_url: str, queue_name: str, stored_rows: Rows
) -> None:
    for badge_class in (PointsBadge, AddictBadge, VisitorBadge, RegularBadge):
        registry.register(badge_class)
    source = ["web", 1, {"agent": "curl"}]
    [award] = await registry.possibly_award_badge("visited", user="ana", source=source)
    assert (award.slug, award.user_id) == ("points", "ana")
    assert await stored_rows() == [("ana", "points", 1)]

    [payload] = await queued_payloads(redis_url, queue_name)
    assert payload == {
        "v": 1,
        "key": payload["key"],
        "event": "visited",
        "user": "ana",
        "at": payload["at"],
        "badges": {
            "addict": {"source": source, "day": "2024-05-07"},
            "visitor": {"source": source},
            "regular": {"source": source},
        },
    }
    assert len(payload["key"]) == 32


async def test_force_timestamp_travels_with_the_job(
    registry: BadgeRegistry, redis_url: str, queue_name: str
) -> None:
    registry.register(VisitorBadge)
    cest = datetime.timezone(datetime.timedelta(hours=2))
    await registry.possibly_award_badge("visited", user=7, force_timestamp=WHEN.astimezone(cest))
    [payload] = await queued_payloads(redis_url, queue_name)
    assert payload["at"] == "2024-05-01T12:00:00+00:00"
    assert payload["user"] == "7"


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"when": datetime.date(2024, 5, 1)},
            "Badge 'state' is deferred, and its state key 'when' holds datetime.date(2024, 5, 1), "
            "which JSON cannot carry. Deferred state travels as JSON: str, int, float, bool, None, "
            "and lists and dicts with str keys. Convert it in freeze(), e.g. to an id or an ISO "
            "string.",
        ),
        (
            {"stats": {"days": [1, {2}]}},
            "Badge 'state' is deferred, and its state key 'stats' at stats['days'][1] holds {2}, "
            "which JSON cannot carry.",
        ),
        ({"score": float("nan")}, "its state key 'score' holds nan, which JSON has no value for."),
        ({"score": float("-inf")}, "its state key 'score' holds -inf, which JSON has no value for"),
        ({"counts": {1: "a"}}, "its state key 'counts' has the key 1, which is not a str."),
        ({"big": 10**5000}, "its state key 'big' holds an int of over 4200 digits."),
        ({"deep": json.loads("[" * 40 + "]" * 40)}, "at deep[0][0][0][0][0][0][0][0][0][0][0]"),
        ({"deep": json.loads("[" * 40 + "]" * 40)}, "] is nested deeper than 32 levels."),
        ({"blob": "x" * MAX_JOB_BYTES}, "The deferred state of event 'visited' is 100"),
    ],
)
async def test_state_json_cannot_carry_is_refused_before_queueing(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    stored_rows: Rows,
    state: dict[str, Any],
    message: str,
) -> None:
    registry.register(PointsBadge)
    registry.register(StateBadge)
    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("visited", user="ana", **state)
    assert message in str(only_error(caught, InvalidStateError))
    assert await queued_payloads(redis_url, queue_name) == []
    # The inline badge of the event does not need JSON: it is recorded all the same.
    assert await stored_rows() == [("ana", "points", 1)]


async def test_a_key_that_is_not_a_str_is_refused(registry: BadgeRegistry) -> None:
    @registry.register
    class NumberedBadge(StateBadge):
        def freeze(self, **state: Any) -> dict[Any, Any]:
            return {**state, 3: "three"}

    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("visited", user="ana")
    assert str(only_error(caught, InvalidStateError)).endswith(
        "its state key 3 is not a str. "
        "Deferred state travels as JSON: str, int, float, bool, None, and lists and dicts with "
        "str keys. Convert it in freeze(), e.g. to an id or an ISO string."
    )


async def test_freeze_must_return_a_dict(
    registry: BadgeRegistry, redis_url: str, queue_name: str
) -> None:
    @registry.register
    class Frozen(StateBadge):
        def freeze(self, **state: Any) -> Any:
            return [state]

    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("visited", user="ana")
    error = only_error(caught, InvalidStateError)
    assert str(error).startswith("Badge 'state' freeze() returned [{")
    assert await queued_payloads(redis_url, queue_name) == []


async def test_one_refused_badge_does_not_stop_the_others_of_the_job(
    registry: BadgeRegistry, redis_url: str, queue_name: str
) -> None:
    @registry.register
    class Failing(StateBadge):
        slug = "failing"

        def freeze(self, **state: Any) -> dict[str, Any]:
            raise ValueError("no state today")

    registry.register(VisitorBadge)
    with pytest.raises(BadgeErrorGroup) as caught:
        await registry.possibly_award_badge("visited", user="ana")
    error = only_error(caught, ValueError)
    assert str(error) == "no state today"
    assert error.__notes__ == ["Raised by deferred badge 'failing' on event 'visited'."]
    [payload] = await queued_payloads(redis_url, queue_name)
    assert list(payload["badges"]) == ["visitor"]


# Redis outages ---------------------------------------------------------------------------------


@pytest.fixture
async def outage_registry(
    database_url: str, redis_server: RedisServer, queue_name: str
) -> AsyncIterator[BadgeRegistry]:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, redis_url=redis_server.url, queue_name=queue_name)
    registry.register(PointsBadge)
    registry.register(VisitorBadge)
    async with registry.lifespan():
        await registry.create_tables()
        await registry.revoke("ana", "points")
        yield registry


async def test_redis_down_fails_fast_and_the_next_call_after_it_returns_works(
    outage_registry: BadgeRegistry, redis_server: RedisServer, queue_name: str
) -> None:
    await redis_server.stop()
    started = time.monotonic()
    with pytest.raises(BadgeErrorGroup) as caught:
        await outage_registry.possibly_award_badge("visited", user="ana")
    assert time.monotonic() - started < 1.5
    error = only_error(caught, QueueUnavailableError)
    assert str(error).startswith(
        f"Redis at {redis_server.url} did not take the job of event 'visited' within 1s "
        "(ConnectionError: "
    )
    assert str(error).endswith("deferred badges ['visitor'] were not queued.")
    assert [award.slug for award in caught.value.recorded] == ["points"]
    assert await outage_registry.has_badge("ana", "points")

    await redis_server.start()
    assert await outage_registry.possibly_award_badge("visited", user="bob") != []
    assert len(await queued_payloads(redis_server.url, queue_name)) == 1


async def test_redis_down_and_a_failing_badge_raise_one_group_that_except_star_splits(
    outage_registry: BadgeRegistry, redis_server: RedisServer, stored_rows: Rows
) -> None:
    @outage_registry.register
    class Failing(Badge):
        slug = "failing"
        levels = ["Never"]
        events = ["visited"]

        def award(self, **state: Any) -> None:
            raise KeyError("profile")

    await redis_server.stop()
    queue_down: list[Exception] = []
    others: list[Exception] = []
    recorded: list[list[str]] = []
    try:
        await outage_registry.possibly_award_badge("visited", user="ana")
    except* QueueUnavailableError as group:
        assert isinstance(group, BadgeErrorGroup)
        queue_down += group.exceptions
        recorded.append([award.slug for award in group.recorded])
    except* KeyError as group:
        others += group.exceptions
    [error] = queue_down
    assert str(error).endswith("deferred badges ['visitor'] were not queued.")
    [key_error] = others
    assert key_error.__notes__ == ["Raised by badge 'failing' on event 'visited'."]
    # Both parts carry what the call recorded: the inline badge that did not fail.
    assert recorded == [["points"]]
    assert await stored_rows() == [("ana", "points", 1)]

    # `except AbadgesError` catches the same group whole.
    with pytest.raises(AbadgesError) as caught:
        await outage_registry.possibly_award_badge("visited", user="bob")
    assert isinstance(caught.value, ExceptionGroup)
    assert str(caught.value) == "2 badges failed on event 'visited' (2 sub-exceptions)"


async def test_a_full_redis_is_named_as_the_cause_without_the_payload(
    outage_registry: BadgeRegistry, redis_server: RedisServer, queue_name: str
) -> None:
    outage_registry.register(StateBadge)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)  # Every write is refused.
        with pytest.raises(BadgeErrorGroup) as caught:
            await outage_registry.possibly_award_badge("visited", user="ana", note="x" * 5000)
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()
    message = str(only_error(caught, QueueUnavailableError))
    assert message == (
        f"Redis at {redis_server.url} refused the job of event 'visited' (OutOfMemoryError: "
        "command not allowed when used memory > 'maxmemory'); deferred badges "
        "['state', 'visitor'] were not queued."
    )
    assert "xxx" not in message


async def test_a_password_in_the_query_is_not_shown(database_url: str, queue_name: str) -> None:
    registry = BadgeRegistry()
    registry.configure(
        database_url=database_url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0?password=s3cret",
        queue_name=queue_name,
    )
    registry.register(VisitorBadge)
    async with registry.lifespan():
        with pytest.raises(BadgeErrorGroup) as caught:
            await registry.possibly_award_badge("visited", user="ana")
    message = str(only_error(caught, QueueUnavailableError))
    assert "?password=*** did not take the job" in message
    assert "s3cret" not in message


async def test_a_silent_redis_fails_within_a_second(database_url: str, queue_name: str) -> None:
    async def never_answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    registry = BadgeRegistry()
    registry.configure(
        database_url=database_url,
        redis_url=f"redis://:secret@127.0.0.1:{port}/0",
        queue_name=queue_name,
    )
    registry.register(VisitorBadge)
    async with anyio.create_task_group() as task_group, listener, registry.lifespan():
        task_group.start_soon(listener.serve, never_answer)
        started = time.monotonic()
        with pytest.raises(BadgeErrorGroup) as caught:
            await registry.possibly_award_badge("visited", user="ana")
        assert 0.9 < time.monotonic() - started < 1.5
        error = str(only_error(caught, QueueUnavailableError))
        assert f"Redis at redis://:***@127.0.0.1:{port}/0 did not take" in error
        assert "within 1s (TimeoutError); deferred badges" in error
        task_group.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"redis_url": "http://x"}, "redis_url must start with one of ['redis://', 'rediss://', "),
        ({"queue": "celery"}, "queue must be one of ['redis', 'inline']; got 'celery'."),
        ({"queue_name": ""}, "queue_name must be a non-empty str; got ''."),
        ({"badges": [1]}, "badges must be module names; got [1]."),
    ],
)
def test_bad_queue_settings_fail_at_configure(setting: dict[str, Any], message: str) -> None:
    registry = BadgeRegistry()
    with pytest.raises(ConfigurationError) as caught:
        registry.configure(**setting)
    assert str(caught.value).startswith(message)
    assert registry.settings.queue == "redis"


# The inline mode -------------------------------------------------------------------------------


@pytest.fixture
async def inline(registry: BadgeRegistry) -> AsyncIterator[BadgeRegistry]:
    """The `registry` fixture's database, with deferred badges run in-process."""
    await registry.disconnect()
    registry.configure(queue="inline")
    async with registry.lifespan():
        yield registry


async def test_inline_mode_runs_deferred_badges_in_the_call(
    inline: BadgeRegistry, redis_url: str, queue_name: str, stored_rows: Rows
) -> None:
    inline.register(StateBadge)
    inline.register(VisitorBadge)
    awards = await inline.possibly_award_badge(
        "visited", user="ana", force_timestamp=WHEN, pair=("a", 1)
    )
    assert [(a.slug, a.awarded_at) for a in awards] == [("state", WHEN), ("visitor", WHEN)]
    # What award() gets went through JSON, as in the worker: a tuple arrives as a list, and
    # without a user loader the user is a UserRef of the identity.
    assert StateBadge.seen == [{"pair": ["a", 1], "user": UserRef("ana")}]
    assert await queued_payloads(redis_url, queue_name) == []
    assert len(await stored_rows()) == 2


async def test_inline_mode_refuses_what_redis_would_refuse(inline: BadgeRegistry) -> None:
    inline.register(StateBadge)
    with pytest.raises(BadgeErrorGroup) as caught:
        await inline.possibly_award_badge("visited", user="ana", when=datetime.date.today())
    assert "key 'when' holds datetime.date" in str(only_error(caught, InvalidStateError))


async def test_inline_mode_loads_users_with_the_user_loader(
    registry: BadgeRegistry, state_dir: pathlib.Path
) -> None:
    await registry.disconnect()
    registry.configure(queue="inline", user_loader="tests.support.deferred_badges:load_user")
    registry.register(AddictBadge)
    async with registry.lifespan():
        for day in range(1, 8):
            record_visit("ana", datetime.date(2024, 5, day))
        [award] = await registry.possibly_award_badge("visited", user="ana")
        assert award.slug == "addict"
        assert await registry.possibly_award_badge("visited", user="bob") == []


async def test_inline_mode_reports_failing_deferred_badges(
    inline: BadgeRegistry, stored_rows: Rows
) -> None:
    @inline.register
    class Failing(StateBadge):
        slug = "failing"

        def award(self, **state: Any) -> BadgeAwarded:
            raise ValueError(f"no award for {state['user'].id}")

    inline.register(VisitorBadge)
    with pytest.raises(BadgeErrorGroup) as caught:
        await inline.possibly_award_badge("visited", user="ana")
    error = only_error(caught, ValueError)
    assert str(error) == "no award for ana"
    assert error.__notes__ == ["Raised by deferred badge 'failing' on event 'visited'."]
    assert [award.slug for award in caught.value.recorded] == ["visitor"]
    assert await stored_rows() == [("ana", "visitor", 1)]

    @inline.register
    class AlsoFailing(Failing):
        slug = "also-failing"

    with pytest.raises(BadgeErrorGroup) as group:
        await inline.possibly_award_badge("visited", user="bob")
    # One flat group, counted right: the deferred badges' errors are not nested in it.
    assert str(group.value) == "2 badges failed on event 'visited' (2 sub-exceptions)"
    assert [str(e) for e in group.value.exceptions] == ["no award for bob", "no award for bob"]


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        ("deferred_badges", "user_loader must look like 'pkg.module:function'; got "),
        (
            "tests.support.deferred_badges:nothing",
            "user_loader is 'tests.support.deferred_badges:nothing', but module ",
        ),
        ("no_such_module:f", "user_loader names module 'no_such_module', which cannot be "),
        (
            "tests.support.deferred_badges:AddictBadge.slug",
            "user_loader 'tests.support.deferred_badges:AddictBadge.slug' ",
        ),
    ],
)
async def test_a_bad_user_loader_fails_at_connect(
    database_url: str, loader: str, message: str
) -> None:
    registry = BadgeRegistry()
    registry.configure(database_url=database_url, user_loader=loader)
    with pytest.raises(ConfigurationError) as caught:
        await registry.connect()
    assert str(caught.value).startswith(message)


# Disconnecting with calls in flight ------------------------------------------------------------


async def test_calls_racing_disconnect_finish_or_are_refused_before_any_badge_runs(
    registry: BadgeRegistry, redis_url: str, queue_name: str, stored_rows: Rows
) -> None:
    """Before, 21 of 200 calls ran the deferred badge's award() in this process (with the
    queue gone they took the inline path), and others raised asyncpg's errors."""
    registry.register(PointsBadge)
    registry.register(StateBadge)
    announced: list[str] = []
    registry.on_award(lambda award: announced.append(award.user_id))
    returned: list[str] = []
    refused: list[NotConnectedError] = []

    async def call(user: str) -> None:
        try:
            await registry.possibly_award_badge("visited", user=user)
        except NotConnectedError as exc:
            refused.append(exc)
        else:
            returned.append(user)

    async with anyio.create_task_group() as group:
        for number in range(200):
            group.start_soon(call, f"u{number}")
            if number == 100:
                group.start_soon(registry.disconnect)
    assert StateBadge.seen == []  # Deferred: never evaluated in the app, only queued.
    assert returned and refused
    assert len(returned) + len(refused) == 200
    assert all("disconnect() has begun" in str(exc) for exc in refused)
    # Each call that returned recorded its award, announced it and queued its job.
    assert sorted(announced) == sorted(returned)
    assert sorted(user for user, _, _ in await stored_rows()) == sorted(returned)
    assert sorted(p["user"] for p in await queued_payloads(redis_url, queue_name)) == sorted(
        returned
    )
    with pytest.raises(NotConnectedError, match="abadges is not connected"):
        await registry.possibly_award_badge("visited", user="late")


async def test_disconnect_closes_under_a_call_that_outlasts_its_wait(
    registry: BadgeRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Stuck(Badge):
        slug = "stuck"
        levels = ["Stuck"]
        events = ["waited"]

        async def award(self, **state: Any) -> BadgeAwarded:
            started.set()
            await anyio.sleep(0.5)  # Its record comes after disconnect() closed the store.
            return BadgeAwarded()

    started = anyio.Event()
    registry.register(Stuck)
    monkeypatch.setattr(abadges._connection, "DISCONNECT_TIMEOUT", 0.1)

    async def disconnect() -> None:
        await started.wait()
        await registry.disconnect()

    async with anyio.create_task_group() as group:
        group.start_soon(disconnect)
        with pytest.raises(
            NotConnectedError, match="closed the connection while this call"
        ) as caught:
            await registry.possibly_award_badge("waited", user="ana")
    assert caught.value.__cause__ is not None
    assert "1 call(s) still running after 0.1s" in caplog.text
    await registry.disconnect()  # Disconnected already: nothing to do.


class SlowBadge(Badge):
    """Takes `delay` seconds to decide, so that a disconnect() comes while it runs."""

    slug = "slow"
    levels = ["Slow"]
    events = ["waited"]
    delay = 0.3
    started: anyio.Event

    async def award(self, **state: Any) -> BadgeAwarded:
        type(self).started.set()
        await anyio.sleep(type(self).delay)
        return BadgeAwarded()


async def test_a_second_disconnect_and_a_connect_wait_for_the_first(
    registry: BadgeRegistry,
) -> None:
    registry.register(SlowBadge)
    SlowBadge.started = anyio.Event()
    database = registry.database
    order: list[str] = []

    async def call() -> None:
        await registry.possibly_award_badge("waited", user="ana")
        order.append("call")

    async def disconnect(name: str) -> None:
        await registry.disconnect()
        order.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await SlowBadge.started.wait()
        group.start_soon(disconnect, "first")
        await anyio.sleep(0.05)
        group.start_soon(disconnect, "second")
    assert order == ["call", "first", "second"]
    assert not database.is_connected

    await registry.connect()
    SlowBadge.started = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await SlowBadge.started.wait()
        group.start_soon(disconnect, "third")
        await anyio.sleep(0.05)
        await registry.connect()  # Waits for the disconnect, then connects afresh.
    assert registry.database.is_connected
    assert [a.slug for a in await registry.awards_for("ana")] == ["slow"]


async def test_a_cancelled_disconnect_still_closes(registry: BadgeRegistry) -> None:
    registry.register(SlowBadge)
    SlowBadge.started = anyio.Event()
    database = registry.database
    async with anyio.create_task_group() as group:

        async def call() -> None:
            with pytest.raises(NotConnectedError, match="closed the connection while this"):
                await registry.possibly_award_badge("waited", user="ana")

        group.start_soon(call)
        await SlowBadge.started.wait()
        with anyio.move_on_after(0.05):
            await registry.disconnect()
    assert not database.is_connected
    with pytest.raises(NotConnectedError, match="abadges is not connected"):
        await registry.awards_for("ana")


async def test_a_call_that_outlasts_disconnect_queues_nothing(
    registry: BadgeRegistry,
    redis_url: str,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Undecided(SlowBadge):
        """Inline, slow, and awards nothing: the call reaches its deferred badges after
        disconnect() closed the queue."""

        slug = "undecided"
        events = ["visited"]

        async def award(self, **state: Any) -> None:  # type: ignore[override]
            await super().award(**state)

    registry.register(Undecided)
    registry.register(StateBadge)
    SlowBadge.started = anyio.Event()
    monkeypatch.setattr(abadges._connection, "DISCONNECT_TIMEOUT", 0.05)
    async with anyio.create_task_group() as group:

        async def disconnect() -> None:
            await SlowBadge.started.wait()
            await registry.disconnect()

        group.start_soon(disconnect)
        with pytest.RaisesGroup(
            pytest.RaisesExc(NotConnectedError, match=r"deferred badges \['state'\] were not")
        ):
            await registry.possibly_award_badge("visited", user="ana")
    assert await queued_payloads(redis_url, queue_name) == []
