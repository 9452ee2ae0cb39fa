"""Revoked awards of `multiple` badges keep their row; SQLite dates before the year 1000 fixed.

`revoked_at` marks a revoked award of a `multiple` badge: its row, and so its award key, stays,
so that a retried event or a job run again cannot bring it back. Every query skips such rows.

Development versions of abadges after 0.1.0 had an SQLite store that wrote years before 1000
without their leading zeros ("999-01-01 ..."), which no query could read back: those dates get
them.

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
        # "999-01-01 ..." to "0999-01-01 ...": the year, before the first "-", padded to four
        # digits; every other date is left as it is.
        op.execute(
            f"UPDATE {TABLE} SET awarded_at = "
            "substr('000', 1, 5 - instr(awarded_at, '-')) || awarded_at "
            "WHERE instr(awarded_at, '-') BETWEEN 2 AND 4"
        )


def downgrade() -> None:
    # Revoked awards of `multiple` badges would count as held again: remove them first.
    op.execute(f"DELETE FROM {TABLE} WHERE revoked_at IS NOT NULL")
    op.drop_column(TABLE, "revoked_at")
