"""The awards table, as abadges 0.1 created it.

A database whose `abadges_awards` table abadges 0.1's `create_tables()` made has no version
table: this revision then keeps the table and its rows, creates what is missing of its indexes,
and records the revision.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The schema of this revision, written out: a revision must not change when tables.py does.
TABLE = "abadges_awards"
INDEXES = {
    "abadges_awards_user": ["user_id", "awarded_at"],
    "abadges_awards_holders": ["slug", "level", "awarded_at"],
}


def _text(length: int) -> sa.types.TypeEngine[str]:
    # Bytes on MySQL/MariaDB, whose collations fold case and trailing spaces (see tables.py).
    return sa.String(length).with_variant(mysql.VARBINARY(4 * length), "mysql", "mariadb")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing: set[str | None] = set()
    if inspector.has_table(TABLE):
        existing = {index["name"] for index in inspector.get_indexes(TABLE)}
    else:
        op.create_table(
            TABLE,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
            sa.Column("user_id", _text(255), nullable=False),
            sa.Column("slug", _text(100), nullable=False),
            sa.Column("level", sa.SmallInteger(), nullable=False),
            sa.Column(
                "awarded_at",
                sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
                nullable=False,
            ),
            sa.Column("award_key", _text(64), nullable=False, server_default=""),
            sa.UniqueConstraint(
                "user_id", "slug", "level", "award_key", name="abadges_awards_once"
            ),
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )
    for name, columns in INDEXES.items():
        if name not in existing:
            op.create_index(name, TABLE, columns)


def downgrade() -> None:
    op.drop_table(TABLE)
