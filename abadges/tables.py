"""The awards table as SQLAlchemy Core; `metadata` is what Alembic users target."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from .base import MAX_SLUG_LENGTH
from .users import MAX_USER_ID_LENGTH

__all__ = ["awards", "backfills", "history", "level_counts", "metadata", "totals"]

#: Length of the key that tells the awards of a `multiple` badge apart (a UUID in hex).
AWARD_KEY_LENGTH = 64
#: Longest `by` (who granted or revoked by hand) and `reason` a change may give.
MAX_BY_LENGTH = 255
MAX_REASON_LENGTH = 1000
#: Length of the `source` and `action` columns ("deferred", "replaced").
WORD_LENGTH = 16
#: Longest name of a backfill's checkpoint, and of the options it records.
MAX_CHECKPOINT_LENGTH = 255
MAX_OPTIONS_LENGTH = 4000

metadata = sa.MetaData()
"""The SQLAlchemy `MetaData` of abadges' tables: what an app's Alembic leaves alone (see
migrations.md)."""


def _text(length: int) -> sa.types.TypeEngine[str]:
    # MySQL's string collations fold case or ignore trailing spaces, so "Bob", "bob" and "bob "
    # would be one user to the unique constraint. Bytes compare exactly; 4 bytes a character.
    return sa.String(length).with_variant(mysql.VARBINARY(4 * length), "mysql", "mariadb")


def _datetime() -> sa.types.TypeEngine[datetime.datetime]:
    # In UTC; MySQL's DATETIME has no zone, and keeps seconds only unless told otherwise.
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


awards = sa.Table(
    "abadges_awards",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("user_id", _text(MAX_USER_ID_LENGTH), nullable=False),
    sa.Column("slug", _text(MAX_SLUG_LENGTH), nullable=False),
    sa.Column("level", sa.SmallInteger(), nullable=False),
    sa.Column("awarded_at", _datetime(), nullable=False),
    # Empty for badges held once; one key per event for `multiple` badges, so that the unique
    # constraint below also makes a replayed event record nothing twice.
    sa.Column("award_key", _text(AWARD_KEY_LENGTH), nullable=False, server_default=""),
    # Set when a `multiple` badge's award is revoked: the row stays, so that its key stays
    # taken and a retried event or a job run again cannot bring the award back. Revoking a
    # badge held once deletes the row instead, so that it can be earned again.
    sa.Column("revoked_at", _datetime(), nullable=True),
    # Where it came from ("event", "deferred", "backfill", "manual"), who granted it by hand
    # and why, and when it stops being held (None: never).
    sa.Column("source", sa.String(WORD_LENGTH), nullable=False, server_default="event"),
    sa.Column("granted_by", _text(MAX_BY_LENGTH), nullable=True),
    sa.Column("reason", _text(MAX_REASON_LENGTH), nullable=True),
    sa.Column("expires_at", _datetime(), nullable=True),
    # The level's `BadgeDetail.points` when it was awarded, which leaderboards add up.
    sa.Column("points", sa.Integer(), nullable=False, server_default="1"),
    # When the user saw it (`mark_seen()`); None: in the unseen list (revision 0007).
    sa.Column("seen_at", _datetime(), nullable=True),
    sa.UniqueConstraint("user_id", "slug", "level", "award_key", name="abadges_awards_once"),
    sa.Index("abadges_awards_user", "user_id", "awarded_at"),
    sa.Index("abadges_awards_holders", "slug", "level", "awarded_at"),
    # For leaderboards `since` a time (revision 0006).
    sa.Index("abadges_awards_time", "awarded_at"),
    # For the periodic job that moves expired awards to the history (revision 0004).
    sa.Index(
        "abadges_awards_expiry",
        "expires_at",
        postgresql_where=sa.text("expires_at IS NOT NULL"),
        sqlite_where=sa.text("expires_at IS NOT NULL"),
    ),
    # For each user's unseen awards, newest first (revision 0007).
    sa.Index(
        "abadges_awards_unseen",
        "user_id",
        "seen_at",
        "awarded_at",
        postgresql_where=sa.text("seen_at IS NULL"),
        sqlite_where=sa.text("seen_at IS NULL"),
    ),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    # SQLite would give a deleted last row's id to the next row, and the history names awards
    # by id: AUTOINCREMENT never reuses one.
    sqlite_autoincrement=True,
)
"""The awards table: one row per award held, and one per revoked award of a `multiple` badge."""


history = sa.Table(
    "abadges_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    # The award's row; kept as a number, not a foreign key: a revoked award's row is deleted.
    sa.Column("award_id", sa.BigInteger(), nullable=False),
    sa.Column("user_id", _text(MAX_USER_ID_LENGTH), nullable=False),
    sa.Column("slug", _text(MAX_SLUG_LENGTH), nullable=False),
    sa.Column("level", sa.SmallInteger(), nullable=False),
    sa.Column("action", sa.String(WORD_LENGTH), nullable=False),
    sa.Column("at", _datetime(), nullable=False),
    sa.Column("source", sa.String(WORD_LENGTH), nullable=False),
    # Who made the change (`by=`), and why (`reason=`); "by" is a keyword of SQL.
    sa.Column("actor", _text(MAX_BY_LENGTH), nullable=True),
    sa.Column("reason", _text(MAX_REASON_LENGTH), nullable=True),
    sa.Index("abadges_history_user", "user_id", "id"),
    sa.Index("abadges_history_badge", "slug", "id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
"""The history: one row per change of what a user holds, written in the transaction of the
change."""


backfills = sa.Table(
    "abadges_backfills",
    metadata,
    # The `checkpoint` name a backfill was given.
    sa.Column("name", _text(MAX_CHECKPOINT_LENGTH), primary_key=True),
    # The badges and options of the run, which a resumed run must repeat.
    sa.Column("options", sa.String(MAX_OPTIONS_LENGTH), nullable=False),
    # How many users, from the start, every batch of which has been written; and the last of
    # them, which a resumed run checks its users against.
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("last_user_id", _text(MAX_USER_ID_LENGTH), nullable=True),
    sa.Column("updated_at", _datetime(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
"""The checkpoints of backfills: where a run stopped, so that running it again resumes there.
A row is deleted when its run ends."""


totals = sa.Table(
    "abadges_totals",
    metadata,
    sa.Column("user_id", _text(MAX_USER_ID_LENGTH), primary_key=True),
    # A badge's slug, or "" for all the user's badges.
    sa.Column("slug", _text(MAX_SLUG_LENGTH), primary_key=True),
    sa.Column("points", sa.BigInteger(), nullable=False),
    sa.Column("awards", sa.BigInteger(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
"""Each user's points and number of awards not revoked, per badge and in all: kept by the
database's triggers on the awards table (revision 0006), in the transaction of each change."""
# A leaderboard's order: most first, ties by user id.
# Each holds the other figure too, so that a page and a rank's count are read from the index
# alone (revision 0006).
sa.Index(
    "abadges_totals_points",
    totals.c.slug,
    totals.c.points.desc(),
    totals.c.user_id,
    totals.c.awards,
)
sa.Index(
    "abadges_totals_awards",
    totals.c.slug,
    totals.c.awards.desc(),
    totals.c.user_id,
    totals.c.points,
)


level_counts = sa.Table(
    "abadges_level_counts",
    metadata,
    sa.Column("slug", _text(MAX_SLUG_LENGTH), primary_key=True),
    sa.Column("level", sa.SmallInteger(), primary_key=True),
    # Level 0 counts the users whose totals row of the slug counts an award: its holders.
    # Concurrent awards of one level add to different rows (by the server process or the
    # connection), so that they do not wait for each other's commit; the count is the sum of
    # the shards.
    sa.Column("shard", sa.SmallInteger(), primary_key=True),
    sa.Column("awards", sa.BigInteger(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
"""How many awards not revoked each badge level has, and how many users hold a badge of each
slug (level 0; slug "" for any badge): kept by the same triggers as `totals`."""
