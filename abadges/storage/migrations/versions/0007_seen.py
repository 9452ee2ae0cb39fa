"""The unseen list: `seen_at` on the awards table, and an index of each user's unseen awards.

An award is unseen until `mark_seen()` sets its `seen_at`. The awards held before this revision
count as seen (at their `awarded_at`): upgrading does not show every user all their badges as
new. The index is partial on PostgreSQL and SQLite (only the unseen rows, which `unseen()`
reads, newest first); MySQL and MariaDB have no partial indexes, and index every row.

The update of the awards held fires revision 0006's triggers, which change no total (neither
`revoked_at` nor `points` changes).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

AWARDS = "abadges_awards"
INDEX = "abadges_awards_unseen"


def upgrade() -> None:
    op.add_column(
        AWARDS,
        sa.Column(
            "seen_at",
            sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
            nullable=True,
        ),
    )
    op.execute(f"UPDATE {AWARDS} SET seen_at = awarded_at")
    unseen = sa.text("seen_at IS NULL")
    op.create_index(
        INDEX,
        AWARDS,
        ["user_id", "seen_at", "awarded_at"],
        postgresql_where=unseen,
        sqlite_where=unseen,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name=AWARDS)
    op.drop_column(AWARDS, "seen_at")
