"""Alembic's environment for abadges' migrations: run by `abadges.storage._migrations` on the
connection it passes in `config.attributes["connection"]`, inside its transaction and lock."""

from __future__ import annotations

from alembic import context

from abadges.storage._migrations import VERSION_TABLE
from abadges.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "abadges' migrations run through `await badges.migrate()` or `abadges db upgrade`, "
        "not from the alembic command, and not offline (--sql)."
    )
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
