"""Change capture: what a stage changes, recorded in the stage's own transaction.

Every statement of a stage that writes an HR table also records, in two temporary tables of the
transaction, the ids of the rows it inserted (`_cc_inserted`) and, before its first change of a
row, the whole row as it was (`_cc_before`: the row type's text form, updated_at included). At the
end of the stage `flush` copies them into the undo store (hrms.imports_undoinsert /
imports_undoupdate, INSERT-only for the import role), each updated row with an md5 of the row as the
stage left it, so an undo can tell whether anything changed it since. Nothing of it survives a
rollback or a killed process: the temporary tables and the store rows are part of the transaction.

The same temporary tables are the stage's touched keys: the in-stage validations check those rows
and their direct relations (validations.Validation.scoped), and a dry run previews them.

Row text and its md5 depend on the session's DateStyle, TimeZone and IntervalStyle; `pin_settings`
fixes them for the transaction (the stage's and the undo's), so the same row always reads the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

# The tables a stage writes, parents before children (deletes of an undo go the other way).
TABLES: tuple[str, ...] = (
    "ladders_ladder", "ladders_aspect", "ladders_level",
    "org_organization", "org_department", "org_tribe", "org_chapter", "org_team",
    "employees_employee",
    "history_timelineevent", "history_compensationsnapshot", "history_senioritysnapshot",
)

# How a row of each table is named to people (previews, refusals): its natural key.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "ladders_ladder": ("code",), "ladders_aspect": ("ladder_id", "code"), "ladders_level": ("ladder_id", "level_number"),
    "org_organization": ("code",), "org_department": ("code",), "org_tribe": ("code",), "org_chapter": ("code",),
    "org_team": ("code",), "employees_employee": ("email",),
    "history_timelineevent": ("employee_id", "event_type", "event_date"),
    "history_compensationsnapshot": ("event_id",), "history_senioritysnapshot": ("event_id",),
}

# The changed rows' own size is measured (for the metadata) when a stage changed at most this many.
CHANGED_BYTES_UP_TO = 100_000

PINNED_SETTINGS = {"DateStyle": "ISO, YMD", "TimeZone": "UTC", "IntervalStyle": "postgres", "extra_float_digits": "1"}


def pin_settings(conn: psycopg.Connection) -> None:
    """The output settings row text and its md5 depend on, fixed for the current transaction."""
    for name, value in PINNED_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, true)", [name, value])


def bare(table: str) -> str:
    name = table.split(".", 1)[-1]
    if name not in TABLES:
        raise ValueError(f"{table}: not a table an import stage writes")
    return name


def begin(conn: psycopg.Connection) -> None:
    """Empty temporary tables for a stage in the current transaction (dropped at its end; a dry run's
    stages share one transaction, and each captures only its own changes)."""
    pin_settings(conn)
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cc_inserted (table_name text NOT NULL, record_id bigint NOT NULL, "
                 "id bigint NOT NULL) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cc_before (table_name text NOT NULL, record_id bigint NOT NULL, "
                 "id bigint NOT NULL, before text NOT NULL, PRIMARY KEY (table_name, id)) ON COMMIT DROP")
    conn.execute("TRUNCATE _cc_inserted, _cc_before")


def capture_inserted(table: str, record_sql: str, source: str = "ins") -> str:
    """A CTE body recording the ids RETURNING-ed by the data-modifying CTE `source`:
    `WITH ins AS (INSERT ... RETURNING id), cc AS ({capture_inserted(...)}) SELECT ...`."""
    return f"INSERT INTO _cc_inserted (table_name, record_id, id) SELECT '{bare(table)}', {record_sql}, id FROM {source}"


def capture_before(table: str, record_sql: str, rows: str) -> str:
    """A statement (or CTE body) recording the whole current row of every row `rows` selects (a query
    over the table aliased `t`) before the first change of the stage; later changes keep the first."""
    return (f"INSERT INTO _cc_before (table_name, record_id, id, before) SELECT '{bare(table)}', {record_sql}, t.id, t::text "
            f"FROM ({rows}) t ON CONFLICT (table_name, id) DO NOTHING")


def record_before(conn: psycopg.Connection, table: str, record_sql: str, rows: str, params=None) -> int:
    return conn.execute(capture_before(table, record_sql, rows), params).rowcount


def touched_sql(table: str) -> str:
    """Ids of the rows of `table` this stage inserted or updated (so far)."""
    name = bare(table)
    return (f"(SELECT id FROM _cc_inserted WHERE table_name = '{name}' "
            f"UNION ALL SELECT id FROM _cc_before WHERE table_name = '{name}')")


def before_rows_sql(table: str) -> str:
    """The rows of `table` this stage updated, as they were before (a subquery of the table's row type)."""
    name = bare(table)
    return f"(SELECT (b.before::hrms.{name}).* FROM _cc_before b WHERE b.table_name = '{name}')"


def as_text(row: str) -> str:
    """SQL for a row (an alias or a row-typed expression) as a JSON object of its values' text forms,
    exactly as PostgreSQL prints them (5000.00 stays 5000.00): for previews and refusals."""
    return f"(SELECT jsonb_object_agg(k, v #>> '{{}}') FROM jsonb_each(to_jsonb({row})) AS e(k, v))"


def analyze(conn: psycopg.Connection) -> None:
    """Statistics of the touched keys, so the planner sizes the scoped validations by the change."""
    conn.execute("ANALYZE _cc_inserted")
    conn.execute("ANALYZE _cc_before")


@dataclass
class Captured:
    inserted: dict[str, int] = field(default_factory=dict)    # table -> rows inserted
    updated: dict[str, int] = field(default_factory=dict)     # table -> rows updated (before-images kept)
    undo_bytes: int = 0                                        # what the undo store keeps for them
    changed_bytes: int | None = None                           # the changed rows' own size (small changes only)

    @property
    def rows(self) -> int:
        return sum(self.inserted.values()) + sum(self.updated.values())


def flush(conn: psycopg.Connection, record_ids: list[int]) -> Captured:
    """Copy what the stage captured into the undo store (still in the stage's transaction) and
    return what it keeps. Rows the stage both inserted and updated are kept as inserted only:
    removing them is their undo. (The import role may only insert into the store: the sizes are
    measured on the way in.)"""
    pin_settings(conn)
    captured = Captured()
    # each kept row's stored size plus its header and fixed columns (an upper bound: TOAST may compress)
    rows = conn.execute("""
        WITH agg AS (
            SELECT record_id, table_name, array_agg(id ORDER BY id) AS ids FROM _cc_inserted GROUP BY 1, 2
        ), kept AS (
            INSERT INTO hrms.imports_undoinsert (import_record_id, table_name, row_ids) SELECT record_id, table_name, ids FROM agg
        )
        SELECT table_name, sum(cardinality(ids)), sum(pg_column_size(ids) + pg_column_size(table_name) + 48)
        FROM agg GROUP BY 1""").fetchall()
    for name, count, size in rows:
        captured.inserted[name] = int(count)
        captured.undo_bytes += int(size)
    for name in [r[0] for r in conn.execute("SELECT DISTINCT table_name FROM _cc_before").fetchall()]:
        count, size = conn.execute(f"""
            WITH images AS (
                SELECT b.record_id, b.table_name, b.id, b.before, md5(t::text)::uuid AS after_md5
                FROM _cc_before b JOIN hrms.{bare(name)} t ON t.id = b.id
                WHERE b.table_name = %s
                  AND NOT EXISTS (SELECT FROM _cc_inserted i WHERE i.table_name = b.table_name AND i.id = b.id)
            ), kept AS (
                INSERT INTO hrms.imports_undoupdate (import_record_id, table_name, row_id, before, after_md5)
                SELECT record_id, table_name, id, before, after_md5 FROM images
            )
            SELECT count(*), coalesce(sum(pg_column_size(before) + pg_column_size(table_name) + 64), 0) FROM images""",
                                   [name]).fetchone()
        if count:
            captured.updated[name] = count
            captured.undo_bytes += int(size)
    tables = sorted(set(captured.inserted) | set(captured.updated))
    if tables and captured.rows <= CHANGED_BYTES_UP_TO:
        captured.changed_bytes = int(conn.execute("SELECT " + " + ".join(
            f"coalesce((SELECT sum(pg_column_size(t.*)) FROM hrms.{name} t WHERE t.id IN {touched_sql(name)}), 0)"
            for name in tables)).fetchone()[0])
    return captured
