"""The award lifecycle: where each award came from, who granted it and why, when it expires;
and the history table, one row per change of what a user holds.

On SQLite the awards table is rebuilt, its rows kept, with AUTOINCREMENT, so that an id is
never given twice.

Existing awards get `source` "event": the table cannot tell which came from a deferred job (a
job's awards carry the event's key, as inline ones do). Each existing award gets its "granted"
row in the history, dated `awarded_at`, and each revoked one (revision 0002) its "revoked" row,
dated `revoked_at`, so that the history starts complete.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

AWARDS = "abadges_awards"
HISTORY = "abadges_history"


def _text(length: int) -> sa.types.TypeEngine[str]:
    # Bytes on MySQL/MariaDB, whose collations fold case and trailing spaces (see tables.py).
    return sa.String(length).with_variant(mysql.VARBINARY(4 * length), "mysql", "mariadb")


def _datetime() -> sa.types.TypeEngine[datetime.datetime]:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # The history names awards by id, and SQLite gives a deleted last row's id to the next
        # row unless the table has AUTOINCREMENT, which only a new table can get.
        with op.batch_alter_table(
            AWARDS, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    op.add_column(
        AWARDS, sa.Column("source", sa.String(16), nullable=False, server_default="event")
    )
    op.add_column(AWARDS, sa.Column("granted_by", _text(255), nullable=True))
    op.add_column(AWARDS, sa.Column("reason", _text(1000), nullable=True))
    op.add_column(AWARDS, sa.Column("expires_at", _datetime(), nullable=True))
    op.create_table(
        HISTORY,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("award_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", _text(255), nullable=False),
        sa.Column("slug", _text(100), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", _datetime(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", _text(255), nullable=True),
        sa.Column("reason", _text(1000), nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    # history() reads newest first, by id: of a user, of a badge, or of all (the primary key).
    op.create_index("abadges_history_user", HISTORY, ["user_id", "id"])
    op.create_index("abadges_history_badge", HISTORY, ["slug", "id"])
    columns = "award_id, user_id, slug, level, action, at, source"
    op.execute(
        f"INSERT INTO {HISTORY} ({columns}) "
        f"SELECT id, user_id, slug, level, 'granted', awarded_at, 'event' FROM {AWARDS} "
        "ORDER BY id"
    )
    op.execute(
        f"INSERT INTO {HISTORY} ({columns}) "
        f"SELECT id, user_id, slug, level, 'revoked', revoked_at, 'event' FROM {AWARDS} "
        "WHERE revoked_at IS NOT NULL ORDER BY id"
    )


def downgrade() -> None:
    op.drop_table(HISTORY)
    for column in ("expires_at", "reason", "granted_by", "source"):
        op.drop_column(AWARDS, column)
