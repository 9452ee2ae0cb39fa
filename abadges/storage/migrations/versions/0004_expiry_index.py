"""An index of the awards that expire, for the periodic job that moves the expired ones to the
history.

Partial on PostgreSQL and SQLite (only the rows with an `expires_at`); MySQL and MariaDB have
no partial indexes, and index every row.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

AWARDS = "abadges_awards"
INDEX = "abadges_awards_expiry"


def upgrade() -> None:
    expiring = sa.text("expires_at IS NOT NULL")
    op.create_index(INDEX, AWARDS, ["expires_at"], postgresql_where=expiring, sqlite_where=expiring)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=AWARDS)
