"""The SQL of one backfill run's undo (undo.py runs it): which rows still hold what the run wrote,
column by column, and the statements that classify and restore a batch of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from hrms_pipelines import settings
from hrms_pipelines.backfills import capture
from hrms_pipelines.backfills.capture import IMAGES
from hrms_pipelines.backfills.registry import BackfillError

BOOKKEEPING = frozenset({"updated_at"})
"""Columns an application sets on every change of a row (see RestoreSql.bookkeeping)."""


class UndoError(BackfillError):
    pass


@dataclass(frozen=True)
class RunRecord:
    id: int
    backfill: str
    run_id: str
    table: str
    key: str
    started_at: datetime
    undone_at: datetime | None
    undone_by: str | None

    @property
    def qualified_table(self) -> str:
        return f"{settings.HR_SCHEMA}.{self.table}"

    @property
    def checkpoint_name(self) -> str:
        return capture.undo_checkpoint_name(self.backfill, self.run_id)


@dataclass
class RestoreSql:
    """The statements that classify and restore a batch of one run's rows: the recorded batches
    whose batch_key is in [%(_first_key)s, %(_last_key)s]. Values are compared in their text form
    (capture.pin_formats) and restored through their type's input (format_type)."""

    run: RunRecord
    columns: list[str]
    """Every column the run recorded (table order)."""
    shape: capture.TableShape

    @classmethod
    def read(cls, conn: psycopg.Connection, run: RunRecord) -> RestoreSql:
        recorded = {r[0] for r in conn.execute(
            sql.SQL("SELECT DISTINCT unnest(columns) FROM {images} WHERE run_ref = %s").format(images=IMAGES), [run.id])}
        shape = capture.TableShape.read(conn, run.table)
        gone = sorted(recorded - set(shape.columns))
        if gone:
            raise UndoError(f"undo of backfill {run.backfill} run {run.run_id}: {run.qualified_table} no longer has the "
                            f"column(s) {', '.join(gone)} it changed; a migration changed the table since. Nothing was changed.")
        return cls(run=run, columns=[c for c in shape.columns if c in recorded], shape=shape)

    @property
    def table(self) -> sql.Composable:
        return sql.Identifier(settings.HR_SCHEMA, self.run.table)

    @property
    def key(self) -> sql.Composable:
        return sql.Identifier(self.run.key)

    @property
    def bookkeeping(self) -> frozenset[str]:
        """Recorded columns that say when a row changed rather than what it holds (BOOKKEEPING): they
        never make a row count as changed since, and go back only where they still hold what the
        backfill wrote (nothing else changed the row). All columns count when the run wrote only those."""
        kept = BOOKKEEPING.intersection(self.columns)
        return frozenset() if kept == set(self.columns) else frozenset(kept)

    def _each(self, template: str, joiner: str = ", ", *, only: str = "all", **names: sql.Composable) -> sql.Composable:
        """`template` once per recorded column ({col}: the column, {name}: its name as a literal,
        {r} {b} {a} {n}: its aliases: recorded?, before, after, now; {type}: its type), joined;
        `only`: "all", "data" (not bookkeeping) or "bookkeeping" columns."""
        chosen = [(i, c) for i, c in enumerate(self.columns)
                  if only == "all" or (c in self.bookkeeping) == (only == "bookkeeping")]
        if not chosen:
            return sql.SQL("true" if joiner.strip() == "AND" else "")
        return sql.SQL(joiner).join(
            sql.SQL(template).format(col=sql.Identifier(c), name=sql.Literal(c), type=self.shape.type_sql(c),
                                     r=sql.Identifier(f"r{i}"), b=sql.Identifier(f"b{i}"), a=sql.Identifier(f"a{i}"),
                                     n=sql.Identifier(f"n{i}"), **names)
            for i, c in chosen)

    def _holds(self, row: str, image: str, merged: str) -> sql.Composable:
        """Every data column the backfill changed in `row` (recorded, before and after differ) holds, in
        its text form, the value `image` (b: before, a: after) of `merged`. Columns it did not change
        (whole-row capture) and bookkeeping columns (updated_at) do not count."""
        return self._each("(NOT {m}.{r} OR {m}.{b} IS NOT DISTINCT FROM {m}.{a} OR {t}.{col}::text IS NOT DISTINCT FROM {m}."
                          + "{" + image + "})", " AND ", only="data", m=sql.Identifier(merged), t=sql.Identifier(row))

    def candidates(self) -> sql.Composable:
        """CTEs _src (the recorded rows), _merged (one per row: its earliest before and latest after,
        when two batch.update calls of a batch changed it) and _cand (each row's state)."""
        return sql.SQL("""
            _src AS (
                SELECT x.row_key, u.step, {flags}
                FROM {images} u
                CROSS JOIN LATERAL unnest(u.keys, {arrays}) AS x (row_key, {names})
                WHERE u.run_ref = %(_run_ref)s AND u.batch_key BETWEEN %(_first_key)s AND %(_last_key)s
            ), _merged AS (
                SELECT row_key, {merge} FROM _src GROUP BY row_key
            ), _cand AS (
                SELECT m.*, {now},
                       CASE WHEN t.{key} IS NULL THEN 'missing'
                            WHEN {holds_after} THEN 'restore'
                            WHEN {holds_before} THEN 'already'
                            ELSE 'changed' END AS state
                FROM _merged m LEFT JOIN {table} t ON t.{key} = m.row_key
            )""").format(
            images=IMAGES, table=self.table, key=self.key,
            flags=self._each("array_position(u.columns, {name}) IS NOT NULL AS {r}, x.{b}, x.{a}"),
            arrays=self._each("(u.before[array_position(u.columns, {name})])::text[], "
                              "(u.after[array_position(u.columns, {name})])::text[]"),
            names=self._each("{b}, {a}"),
            merge=self._each("bool_or({r}) AS {r}, (array_agg({b} ORDER BY step) FILTER (WHERE {r}))[1] AS {b}, "
                             "(array_agg({a} ORDER BY step DESC) FILTER (WHERE {r}))[1] AS {a}"),
            now=self._each("t.{col}::text AS {n}"),
            holds_after=self._holds("t", "a", "m"), holds_before=self._holds("t", "b", "m"))

    def _image(self, value: str) -> sql.Composable:
        """A jsonb of the recorded columns of _cand row c: their `value` (n: now, b: before)."""
        return sql.SQL("(SELECT jsonb_object_agg(z.col, z.val) FROM (VALUES {pairs}) z (col, val, recorded) "
                       "WHERE z.recorded)").format(pairs=self._each("({name}, c.{" + value + "}, c.{r})"))

    def restore(self) -> sql.Composable:
        """Classify, restore (the rows still as the backfill left them; with %(_overwrite)s also those
        changed since, whose values then go to the audit log), and count."""
        return sql.SQL("""
            WITH {candidates}, _restored AS (
                UPDATE {table} t SET {assignments}
                FROM _cand c
                WHERE t.{key} = c.row_key
                  AND ((c.state = 'restore' AND {still_after}) OR (%(_overwrite)s AND c.state = 'changed'))
                RETURNING t.{key} AS row_key
            ), _overwritten AS (
                INSERT INTO {audit} (run_id, source, action, table_name, row_key, before, after)
                SELECT %(_undo_run)s, %(_source)s, 'undo', %(_table)s, c.row_key::text, {now}, {before}
                FROM _cand c JOIN _restored r ON r.row_key = c.row_key
                WHERE c.state = 'changed'
            )
            SELECT count(r.row_key),
                   count(r.row_key) FILTER (WHERE c.state = 'changed'),
                   count(*) FILTER (WHERE c.state = 'already'),
                   coalesce(array_agg(c.row_key ORDER BY c.row_key)
                            FILTER (WHERE r.row_key IS NULL AND c.state IN ('restore', 'changed')), '{{}}'),
                   coalesce(array_agg(c.row_key ORDER BY c.row_key) FILTER (WHERE c.state = 'missing'), '{{}}')
            FROM _cand c LEFT JOIN _restored r ON r.row_key = c.row_key""").format(
            candidates=self.candidates(), table=self.table, key=self.key,
            assignments=sql.SQL(", ").join(part for part in (
                self._each("{col} = CASE WHEN c.{r} AND c.{b} IS DISTINCT FROM c.{a} THEN c.{b}::{type} ELSE t.{col} END",
                           only="data"),
                # a bookkeeping column goes back where it still holds what the backfill wrote, or when overwriting
                self._each("{col} = CASE WHEN c.{r} AND c.{b} IS DISTINCT FROM c.{a} AND (c.state = 'changed' "
                           "OR t.{col}::text IS NOT DISTINCT FROM c.{a}) THEN c.{b}::{type} ELSE t.{col} END",
                           only="bookkeeping")) if part.as_string(None)),
            still_after=self._holds("t", "a", "c"), audit=sql.Identifier(settings.HR_SCHEMA, "core_auditlog"),
            now=self._image("n"), before=self._image("b"))

    def classify(self) -> sql.Composable:
        """The dry run's count of each state, and the first keys of the rows changed since and of those
        that would be restored."""
        return sql.SQL("""
            WITH {candidates}
            SELECT count(*) FILTER (WHERE state = 'restore'), count(*) FILTER (WHERE state = 'already'),
                   count(*) FILTER (WHERE state = 'changed'), count(*) FILTER (WHERE state = 'missing'),
                   coalesce((array_agg(row_key ORDER BY row_key) FILTER (WHERE state = 'changed'))[1:%(_examples)s], '{{}}'),
                   coalesce((array_agg(row_key ORDER BY row_key) FILTER (WHERE state = 'restore'))[1:%(_examples)s], '{{}}')
            FROM _cand""").format(candidates=self.candidates())

    def details(self) -> sql.Composable:
        """Recorded and current values of the columns of some rows of the batch, for the report (masked there)."""
        return sql.SQL("""
            SELECT v.row_key, v.column_name, v.before, v.after, CASE v.column_name {current} END, t.{key} IS NULL
            FROM {rows} v LEFT JOIN {table} t ON t.{key} = v.row_key
            WHERE v.run_ref = %(_run_ref)s AND v.batch_key BETWEEN %(_first_key)s AND %(_last_key)s
              AND v.row_key = ANY(%(_keys)s)
            ORDER BY v.row_key, v.column_name, v.step""").format(
            rows=sql.Identifier(settings.HR_SCHEMA, "core_backfillundo_rows"), table=self.table, key=self.key,
            current=self._each("WHEN {name} THEN t.{col}::text", " "))
