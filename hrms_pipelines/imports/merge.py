"""The set-based merge of staged rows into an HR table (insert new keys, update real changes only,
audit every update, capture what changed for undo), and the small SQL helpers the stages share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from hrms_pipelines.imports import changes
from hrms_pipelines.imports.context import Context



@dataclass(frozen=True)
class Merge:
    target: str                       # hrms.table
    key: tuple[str, ...]              # natural key (a unique constraint)
    columns: tuple[str, ...]          # value columns compared / updated
    source: str                       # a temp table holding key + columns (typed) + row_number + file
    label: str                        # for counts: "ladders", "teams", ...


def merge(ctx: Context, m: Merge, *, update: bool, record_id_sql: str) -> dict[str, int]:
    """Insert new keys; update existing rows whose values really differ (when `update`), auditing
    before/after; count the rest as unchanged (same values) or skipped (differs, no update flag).
    A blank cell never erases a stored value: it compares and updates as "keep what is there".

    Every row this inserts or updates is captured for undo (hrms_pipelines.imports.changes) in the
    same statement: the before-image is read from the same snapshot the update starts from.

    The comparison is one pass over the staged rows joined to the table on its key: only rows whose
    values differ go further (update or count as skipped); a full export of unchanged rows costs one
    hash join."""
    conn = ctx.conn
    key_match = " AND ".join(f"t.{k} = s.{k}" for k in m.key)
    new_values = [f"coalesce(s.{c}, t.{c})" for c in m.columns]
    differs = f"({', '.join('t.' + c for c in m.columns)}) IS DISTINCT FROM ({', '.join(new_values)})" if m.columns else "false"
    total = conn.execute(f"SELECT count(*) FROM {m.source}").fetchone()[0]
    table = m.target.split(".", 1)[1]
    updated = skipped = 0
    if update and m.columns:
        before = "jsonb_build_object(" + ", ".join(f"'{c}', t.{c}" for c in m.columns) + ")"
        after = "jsonb_build_object(" + ", ".join(f"'{c}', u.{c}" for c in m.columns) + ")"
        row_key = " || '/' || ".join(f"u.{k}::text" for k in m.key)
        cur = conn.execute(
            f"""
            WITH changed AS (
                SELECT t.id, {before} AS before, t AS old FROM {m.target} t JOIN {m.source} s ON {key_match} WHERE {differs}
            ), captured AS (
                {changes.capture_before(table, record_id_sql, 'SELECT (c.old).* FROM changed c')}
            ), upd AS (
                UPDATE {m.target} t SET {', '.join(f'{c} = {v}' for c, v in zip(m.columns, new_values))}, updated_at = now()
                FROM {m.source} s WHERE {key_match} AND t.id IN (SELECT id FROM changed)
                RETURNING t.*
            )
            INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after, import_record_id)
            SELECT %s, %s, 'update', %s, {row_key}, c.before, {after}, {record_id_sql}
            FROM upd u JOIN changed c ON c.id = u.id
            """,
            [ctx.run_id, ctx.audit_source(), table],
        )
        updated = cur.rowcount
    elif m.columns:
        skipped = conn.execute(f"SELECT count(*) FROM {m.target} t JOIN {m.source} s ON {key_match} WHERE {differs}").fetchone()[0]
    insert_cols = list(m.key) + list(m.columns)
    inserted = conn.execute(
        f"WITH ins AS (INSERT INTO {m.target} ({', '.join(insert_cols)}, import_record_id) "
        f"SELECT {', '.join('s.' + c for c in insert_cols)}, {record_id_sql} FROM {m.source} s "
        f"ON CONFLICT ({', '.join(m.key)}) DO NOTHING RETURNING id), "
        f"captured AS ({changes.capture_inserted(table, record_id_sql)}) "
        "SELECT count(*) FROM ins"
    ).fetchone()[0]
    counts = {"inserted": inserted, "updated": updated, "skipped": skipped,
              "unchanged": total - inserted - updated - skipped}
    ctx.result.entities[m.label] = counts
    if skipped:
        ctx.log.info(f"{m.label}: {skipped} existing row(s) differ from the file and were left as they are (force_update is off)")
    return counts


def temp_table(conn: psycopg.Connection, name: str, query: str, params: Sequence | None = None) -> int:
    """CREATE TEMP TABLE name AS query (dropped at commit); returns its row count."""
    cur = conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS ").format(sql.Identifier(name)).as_string(conn) + query, params)
    return cur.rowcount


def sql_rejects(ctx: Context, file: str, query: str, params: Sequence | None = None) -> int:
    """Add the rows of `query` (row_number, column, value, rule) as rejects of `file`; returns how many."""
    from hrms_pipelines.imports.reader import Reject

    rows = ctx.conn.execute(query, params).fetchall()
    for row_number, column, value, rule in rows:
        ctx.rejects.add(Reject(file, int(row_number) + 1 if row_number is not None else None, column, value, rule))
    return len(rows)
