"""Every use abadges makes of `databases`' private attributes, in one place.

`databases` 0.9.0 (pinned exactly in pyproject.toml) is unmaintained; where speed needs its
internals, the stores reach them through these functions only, and
`tests/test_storage_internals.py` fails, saying what changed, when a release moves them.
"""

from __future__ import annotations

from typing import Any

import databases
from databases.interfaces import DatabaseBackend


def backend(database: databases.Database) -> DatabaseBackend:
    """The backend (`databases.backends.*Backend`) of a `Database`."""
    # Private: `Database._backend` is set in `Database.__init__` from SUPPORTED_BACKENDS.
    backend: DatabaseBackend = database._backend
    return backend


def new_connection(database: databases.Database) -> databases.core.Connection:
    """A `Connection` of its own, not the one `databases` keeps for the current task."""
    # Private: `Connection(database, backend)` is how `Database.connection()` builds one; its
    # arguments are not documented, and the backend is `Database._backend`.
    return databases.core.Connection(database, backend(database))


def asyncpg_pool(database: databases.Database) -> Any:
    """The `asyncpg.Pool` under a connected PostgreSQL `Database`."""
    # Private: `PostgresBackend._pool`, created by `PostgresBackend.connect()` and set back to
    # None by `disconnect()`. Typed Any so that asyncpg, an optional extra, is not imported.
    return backend(database)._pool  # type: ignore[attr-defined]
