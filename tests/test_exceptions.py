from __future__ import annotations

import datetime
import sqlite3

from abadges import (
    AbadgesError,
    Award,
    BadgeErrorGroup,
    InvalidLevelError,
    QueueUnavailableError,
    is_transient,
)

AWARD = Award(1, "ana", "points", 1, "Bronze", None, datetime.datetime.now(datetime.UTC))


def test_the_group_is_an_exception_group_and_an_abadges_error() -> None:
    group = BadgeErrorGroup("1 badge failed on event 'x'", [KeyError("bio")], [AWARD])
    assert isinstance(group, ExceptionGroup)
    assert isinstance(group, AbadgesError)
    assert group.recorded == [AWARD]
    assert str(group) == "1 badge failed on event 'x' (1 sub-exception)"


def test_its_parts_keep_the_type_and_the_recorded_awards() -> None:
    queue = QueueUnavailableError("Redis is down")
    group = BadgeErrorGroup("2 badges failed on event 'x'", [KeyError("bio"), queue], [AWARD])
    match, rest = group.split(QueueUnavailableError)
    assert isinstance(match, BadgeErrorGroup)
    assert isinstance(rest, BadgeErrorGroup)
    assert match.exceptions == (queue,)
    assert match.recorded == rest.recorded == [AWARD]
    assert match.message == group.message


def test_a_group_is_transient_when_every_error_in_it_is() -> None:
    queue = QueueUnavailableError("Redis is down")
    locked = sqlite3.OperationalError("database is locked")
    assert is_transient(queue)
    assert is_transient(ConnectionResetError())
    assert is_transient(BadgeErrorGroup("2 failed", [queue, locked]))
    assert not is_transient(BadgeErrorGroup("2 failed", [queue, InvalidLevelError("level 4")]))
    assert not is_transient(KeyError("bio"))
