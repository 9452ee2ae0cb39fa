"""Revoked awards of `multiple` badges keep their row; SQLite dates before the year 1000 fixed.

`revoked_at` marks a revoked award of a `multiple` badge: its row, and so its award key, stays,
so that a retried event or a job run again cannot bring it back. Every query skips such rows.

Before this revision, the SQLite store wrote years before 1000 without their leading zeros
("999-01-01 ..."), which no query could read back: those dates get them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE = "abadges_awards"
# The length of "YYYY-MM-DD HH:MM:SS.ffffff", the text SQLAlchemy's SQLite DateTime reads.
SQLITE_DATETIME_LENGTH = 26


def upgrade() -> None:
    op.add_column(
        TABLE,
        sa.Column(
            "revoked_at",
            sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=True,
        ),
    )
    if op.get_bind().dialect.name == "sqlite":
        # "999-01-01 ..." to "0999-01-01 ...": pad to the full length with zeros in front.
        op.execute(
            f"UPDATE {TABLE} SET awarded_at = "
            f"substr('000' || awarded_at, -{SQLITE_DATETIME_LENGTH}) "
            f"WHERE length(awarded_at) < {SQLITE_DATETIME_LENGTH}"
        )


def downgrade() -> None:
    # Revoked awards of `multiple` badges would count as held again: remove them first.
    op.execute(f"DELETE FROM {TABLE} WHERE revoked_at IS NOT NULL")
    op.drop_column(TABLE, "revoked_at")
