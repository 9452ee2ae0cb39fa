"""The award store: recorded awards in SQLite, PostgreSQL or MySQL/MariaDB through `databases`,
one `Store` class per database (`sqlite.py`, `postgresql.py`, `mysql.py`), picked from the URL
by `open_store()`. `base.py` holds the interface and the queries the databases share;
`_databases.py` every use of `databases`' private attributes; `_migrations.py` runs abadges'
Alembic migrations, which `migrations/` ships as package data.
"""

from __future__ import annotations

import databases

from ..exceptions import ConfigurationError
from .base import Describe, Store
from .mysql import MySQLStore
from .postgresql import PostgreSQLStore
from .sqlite import SQLiteStore

#: The store for each URL scheme abadges supports, as databases' SUPPORTED_BACKENDS does.
STORES: dict[str, type[Store]] = {
    scheme: store
    for store in (SQLiteStore, PostgreSQLStore, MySQLStore)
    for scheme in store.alembic_drivers
}


def open_store(database_url: str, describe: Describe) -> Store:
    """The `Store` for `database_url`, not yet connected; `describe(slug, level)` names levels.

    `ConfigurationError` when the URL names a database or a driver abadges does not support,
    or a driver that is not installed."""
    url = databases.DatabaseURL(database_url)
    store = STORES.get(url.scheme)
    if store is None:
        raise ConfigurationError(
            f"The database URL {url.obscure_password!r} is not supported; abadges works with "
            "sqlite+aiosqlite://, postgresql+asyncpg:// and mysql+asyncmy:// URLs."
        )
    return store(url, describe)
