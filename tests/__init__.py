"""The suite: against real SQLite, PostgreSQL, MariaDB and Redis servers."""
