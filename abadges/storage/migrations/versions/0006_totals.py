"""Points and totals, for leaderboards and badge statistics.

- `abadges_awards.points`: the level's `BadgeDetail.points` when it was awarded (1 for the
  awards already held, the default);
- `abadges_totals`: each user's points and number of awards not revoked, per badge and in all
  (slug ""), and `abadges_level_counts`: the number of awards not revoked of each level, and
  as level 0 the number of users whose totals row of the slug counts an award (the holders),
  in shards that concurrent transactions write apart;
- triggers on the awards table that keep both in the transaction of every insert, delete and
  update, whichever code (or SQL) makes it; the tables are filled from the awards held;
- an index of `awarded_at`, for leaderboards `since` a time.

PostgreSQL runs one statement-level trigger per statement (its rows in transition tables);
SQLite and MySQL/MariaDB one trigger per row. On MySQL/MariaDB with binary logging on, a user
without SUPER needs `log_bin_trust_function_creators = 1` to create triggers, and DDL does not
roll back: run this revision while no process writes awards.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

AWARDS = "abadges_awards"
TOTALS = "abadges_totals"
COUNTS = "abadges_level_counts"
TIME_INDEX = "abadges_awards_time"
#: The triggers, by the change of the awards table they follow.
TRIGGERS = {"insert": "abadges_count_insert", "delete": "abadges_count_delete"}
TRIGGERS["update"] = "abadges_count_update"
#: Shards of a level's count (PostgreSQL, MySQL): by the server process or connection.
SHARDS = 8
#: The level of `abadges_level_counts` that counts a slug's holders (levels start at 1).
HOLDERS = 0


def _text(length: int) -> sa.types.TypeEngine[str]:
    # Bytes on MySQL/MariaDB, whose collations fold case and trailing spaces (see tables.py).
    return sa.String(length).with_variant(mysql.VARBINARY(4 * length), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column(AWARDS, sa.Column("points", sa.Integer(), nullable=False, server_default="1"))
    op.create_index(TIME_INDEX, AWARDS, ["awarded_at"])
    op.create_table(
        TOTALS,
        sa.Column("user_id", _text(255), primary_key=True),
        sa.Column("slug", _text(100), primary_key=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("awards", sa.BigInteger(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    # Each index holds the other figure too: a page (`awards > 0`, both figures shown) and the
    # count of those ranked above are then read from the index alone, not from the table's rows.
    for by, other in (("points", "awards"), ("awards", "points")):
        columns: list[str | sa.TextClause] = ["slug", sa.text(f"{by} DESC"), "user_id", other]
        op.create_index(f"abadges_totals_{by}", TOTALS, columns)
    op.create_table(
        COUNTS,
        sa.Column("slug", _text(100), primary_key=True),
        sa.Column("level", sa.SmallInteger(), primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True),
        sa.Column("awards", sa.BigInteger(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    held = f"FROM {AWARDS} WHERE revoked_at IS NULL"
    op.execute(
        f"INSERT INTO {TOTALS} (user_id, slug, points, awards) "
        f"SELECT user_id, slug, SUM(points), COUNT(*) {held} GROUP BY user_id, slug"
    )
    op.execute(
        f"INSERT INTO {TOTALS} (user_id, slug, points, awards) "
        f"SELECT user_id, '', SUM(points), COUNT(*) {held} GROUP BY user_id"
    )
    op.execute(
        f"INSERT INTO {COUNTS} (slug, level, shard, awards) "
        f"SELECT slug, level, 0, COUNT(*) {held} GROUP BY slug, level"
    )
    op.execute(
        f"INSERT INTO {COUNTS} (slug, level, shard, awards) "
        f"SELECT slug, {HOLDERS}, 0, COUNT(*) FROM {TOTALS} WHERE awards > 0 GROUP BY slug"
    )
    dialect = op.get_context().dialect.name
    statements = {"postgresql": _postgresql, "sqlite": _sqlite}.get(dialect, _mysql)()
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    for trigger in TRIGGERS.values():
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER {trigger} ON {AWARDS}")
            op.execute(f"DROP FUNCTION {trigger}()")
        else:
            op.execute(f"DROP TRIGGER {trigger}")
    op.drop_table(COUNTS)
    op.drop_table(TOTALS)
    op.drop_index(TIME_INDEX, table_name=AWARDS)
    op.drop_column(AWARDS, "points")


# Each trigger adds a change's deltas (user_id, slug, level, p: points, n: awards) to the
# totals of the user's badge and of all the user's badges, and to the level's count. A row
# counts while it is not revoked; a revoked row's `revoked_at` is set (a `multiple` badge's)
# or the row is deleted. A totals row whose awards went from 0 to more adds a holder to its
# slug's count of level 0, and one that went down to 0 takes one off.


def _holder(awards: str, n: str) -> str:
    """+1, -1 or 0: the change of holders of a totals row that now counts `awards`, `n` of
    them added by the change."""
    return (
        f"(CASE WHEN {awards} > 0 AND {awards} - ({n}) <= 0 THEN 1 "
        f"WHEN {awards} <= 0 AND {awards} - ({n}) > 0 THEN -1 ELSE 0 END)"
    )


def _postgresql() -> list[str]:
    deltas = {
        "insert": "SELECT user_id, slug, level, points AS p, 1 AS n FROM new_rows "
        "WHERE revoked_at IS NULL",
        "delete": "SELECT user_id, slug, level, -points AS p, -1 AS n FROM old_rows "
        "WHERE revoked_at IS NULL",
    }
    deltas["update"] = f"{deltas['insert']} UNION ALL {deltas['delete']}"
    tables = {
        "insert": "REFERENCING NEW TABLE AS new_rows",
        "delete": "REFERENCING OLD TABLE AS old_rows",
        "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    }
    statements = []
    for change, trigger in TRIGGERS.items():
        # In the order of the keys, so that concurrent statements lock the rows in one order
        # and cannot deadlock each other.
        # One statement: the totals' upsert returns the rows it wrote, from which the holders'
        # changes are added to the level counts with the levels' own.
        holder = _holder("up.awards", "s.n")
        body = (
            f"WITH d AS ({deltas[change]}), "
            "s AS (SELECT user_id, slug, SUM(p) AS p, SUM(n) AS n FROM (SELECT user_id, slug, "
            "p, n FROM d UNION ALL SELECT user_id, '', p, n FROM d) AS both_ "
            "GROUP BY user_id, slug HAVING SUM(p) <> 0 OR SUM(n) <> 0), "
            f"up AS (INSERT INTO {TOTALS} AS t (user_id, slug, points, awards) "
            "SELECT user_id, slug, p, n FROM s ORDER BY user_id, slug "
            "ON CONFLICT (user_id, slug) DO UPDATE "
            "SET points = t.points + excluded.points, awards = t.awards + excluded.awards "
            "RETURNING t.user_id, t.slug, t.awards), "
            f"h AS (SELECT up.slug, {HOLDERS} AS level, {holder} AS n FROM up "
            "JOIN s ON s.user_id = up.user_id AND s.slug = up.slug) "
            f"INSERT INTO {COUNTS} AS c (slug, level, shard, awards) "
            f"SELECT slug, level, pg_backend_pid() % {SHARDS}, SUM(n) FROM (SELECT slug, level, "
            "n FROM d UNION ALL SELECT slug, level, n FROM h) AS counted "
            "GROUP BY slug, level HAVING SUM(n) <> 0 ORDER BY slug, level "
            "ON CONFLICT (slug, level, shard) DO UPDATE SET awards = c.awards + excluded.awards;"
        )
        statements.append(
            f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body} RETURN NULL; END $$"
        )
        statements.append(
            f"CREATE TRIGGER {trigger} AFTER {change.upper()} ON {AWARDS} {tables[change]} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {trigger}()"
        )
    return statements


def _row_deltas() -> dict[str, tuple[str, str, str, str]]:
    """Per change: (row, condition, points, awards) of a row-level trigger."""
    counted = "{row}.revoked_at IS NULL"
    new, old = counted.format(row="NEW"), counted.format(row="OLD")
    return {
        "insert": ("NEW", new, "NEW.points", "1"),
        "delete": ("OLD", old, "-OLD.points", "-1"),
        "update": (
            "NEW",
            f"(({new}) <> ({old}) OR NEW.points <> OLD.points)",
            f"(CASE WHEN {new} THEN NEW.points ELSE 0 END) "
            f"- (CASE WHEN {old} THEN OLD.points ELSE 0 END)",
            f"(CASE WHEN {new} THEN 1 ELSE 0 END) - (CASE WHEN {old} THEN 1 ELSE 0 END)",
        ),
    }


def _sqlite() -> list[str]:
    statements = []
    for change, (row, condition, points, count) in _row_deltas().items():
        statements.append(
            f"CREATE TRIGGER {TRIGGERS[change]} AFTER {change.upper()} ON {AWARDS} "
            f"WHEN {condition} BEGIN "
            f"INSERT INTO {TOTALS} (user_id, slug, points, awards) "
            f"VALUES ({row}.user_id, {row}.slug, {points}, {count}), "
            f"({row}.user_id, '', {points}, {count}) "
            "ON CONFLICT (user_id, slug) DO UPDATE "
            "SET points = points + excluded.points, awards = awards + excluded.awards; "
            f"INSERT INTO {COUNTS} (slug, level, shard, awards) "
            f"VALUES ({row}.slug, {row}.level, 0, {count}) "
            "ON CONFLICT (slug, level, shard) DO UPDATE SET awards = awards + excluded.awards; "
            f"INSERT INTO {COUNTS} (slug, level, shard, awards) "
            f"SELECT slug, {HOLDERS}, 0, {_holder('awards', count)} FROM {TOTALS} "
            f"WHERE user_id = {row}.user_id AND slug IN ({row}.slug, '') "
            f"AND {_holder('awards', count)} <> 0 "
            "ON CONFLICT (slug, level, shard) DO UPDATE SET awards = awards + excluded.awards; "
            "END"
        )
    return statements


def _mysql() -> list[str]:
    statements = []
    for change, (row, condition, points, count) in _row_deltas().items():
        # No VALUES() in the updates: MySQL 8 warns that it is deprecated, and each warning
        # costs the drivers a SHOW WARNINGS round trip.
        statements.append(
            f"CREATE TRIGGER {TRIGGERS[change]} AFTER {change.upper()} ON {AWARDS} "
            f"FOR EACH ROW BEGIN IF {condition} THEN "
            f"INSERT INTO {TOTALS} (user_id, slug, points, awards) "
            f"VALUES ({row}.user_id, {row}.slug, {points}, {count}), "
            f"({row}.user_id, '', {points}, {count}) "
            f"ON DUPLICATE KEY UPDATE points = points + ({points}), awards = awards + ({count}); "
            f"INSERT INTO {COUNTS} (slug, level, shard, awards) "
            f"VALUES ({row}.slug, {row}.level, CONNECTION_ID() % {SHARDS}, {count}) "
            f"ON DUPLICATE KEY UPDATE awards = awards + ({count}); "
            f"INSERT INTO {COUNTS} (slug, level, shard, awards) "
            f"SELECT h.slug, {HOLDERS}, CONNECTION_ID() % {SHARDS}, h.n FROM (SELECT slug, "
            f"{_holder('awards', count)} AS n FROM {TOTALS} WHERE user_id = {row}.user_id "
            f"AND slug IN ({row}.slug, '')) AS h WHERE h.n <> 0 "
            "ON DUPLICATE KEY UPDATE awards = awards + h.n; "
            "END IF; END"
        )
    return statements
