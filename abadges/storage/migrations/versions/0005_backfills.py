"""The checkpoints of backfills (`badges.backfill(..., checkpoint="name")`): one row per run
that has not ended, so that running it again after a crash resumes where it stopped.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BACKFILLS = "abadges_backfills"


def _text(length: int) -> sa.types.TypeEngine[str]:
    # Bytes on MySQL/MariaDB, whose collations fold case and trailing spaces (see tables.py).
    return sa.String(length).with_variant(mysql.VARBINARY(4 * length), "mysql", "mariadb")


def _datetime() -> sa.types.TypeEngine[datetime.datetime]:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        BACKFILLS,
        sa.Column("name", _text(255), primary_key=True),
        sa.Column("options", sa.String(4000), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("last_user_id", _text(255), nullable=True),
        sa.Column("updated_at", _datetime(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table(BACKFILLS)
