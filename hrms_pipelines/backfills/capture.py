"""What a backfill run records so that it can be undone (undo.py puts it back).

- `core_backfillrun`: one row per run of a backfill (checkpoint name, Dagster run id, table, and
  where its checkpoint stood when it started), written with the checkpoint's start.
- `core_backfillundo`: the before-image of every row the run changed, one row per batch (and per
  `batch.update` call of the batch: its step): the changed rows' keys and, for each recorded column,
  the text form of its values before and after, as arrays in the order of the keys. The batch's
  UPDATE writes it itself, in the same statement and so the same transaction as the change and the
  checkpoint: a run killed at any instant leaves exactly the images of its committed batches, and no
  image without its change. One insert per batch, whatever its size: keeping the images costs a
  fraction of the UPDATE (bench/backfill_bench.py), where a row per changed row would cost half of it.

Which columns a change touches is read from the SET list of `batch.update` with PostgreSQL's own
parser (pglast): `line_total = round(amount * quantity, 2), updated_at = now()` records line_total
and updated_at. A table with a BEFORE UPDATE row trigger (which may change any column) records every
column instead. Generated columns are never recorded (PostgreSQL recomputes them).

Values go through their type's text form, which is exact (it is what pg_dump relies on) once the
output settings that change it are pinned: `pin_formats` sets DateStyle ISO (the day/month order is
kept), IntervalStyle postgres, bytea_output hex and extra_float_digits 1 for the transaction, in
the batch that records and in the undo that reads.

    PostgreSQL 18+:  WITH c AS (UPDATE t SET ... WHERE <batch> RETURNING key, old.col::text, new.col::text)
                     INSERT INTO core_backfillundo SELECT ..., array_agg(key), ARRAY[array_agg(old)::text]... FROM c
    older servers:   the same, the old values read from a snapshot join (UPDATE t ... FROM (SELECT key,
                     col::text FROM t WHERE <batch>) p WHERE t.key = p.key AND t.col::text = p.col), so a
                     row changed by someone else between the snapshot and the update is left alone
                     rather than recorded with a stale value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from pglast import parse_sql
from pglast.parser import ParseError

from hrms_pipelines import settings
from hrms_pipelines.backfills.registry import BackfillError, Batch, Plan

RUNS = sql.Identifier(settings.HR_SCHEMA, "core_backfillrun")
IMAGES = sql.Identifier(settings.HR_SCHEMA, "core_backfillundo")
CHECKPOINTS = sql.Identifier(settings.HR_SCHEMA, "core_backfillcheckpoint")
RETURNING_OLD_VERSION = 180000  # PostgreSQL 18: RETURNING old.*, new.*


class CaptureError(BackfillError):
    """The change of a backfill cannot be recorded for undo; says what to write instead."""


def undo_checkpoint_name(backfill: str, run_id: str) -> str:
    """The checkpoint of the undo of one run of `backfill`."""
    return f"undo:{backfill}:{run_id}"


# --- run records --------------------------------------------------------------------------------

def start_run(conn: psycopg.Connection, plan: Plan, run_id: str, checkpoint: tuple[int | None, int, int], *,
              restart: bool) -> int:
    """Record a run of `plan` (inside the transaction that starts its checkpoint); returns its id.

    `checkpoint` is (last key, rows done, batches done) as the run starts, after a restart reset:
    an undo of this run (when no later run is left) rewinds the checkpoint to it. A retried step of
    the same Dagster run keeps the first record; it may not restart over rows the run has changed."""
    from_key, rows_done, batches_done = checkpoint
    row = conn.execute(
        sql.SQL("""INSERT INTO {runs} (backfill, run_id, table_name, key_column, from_key, rows_done_before,
                                       batches_done_before)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (backfill, run_id) DO NOTHING RETURNING id""").format(
            runs=RUNS),
        [plan.name, run_id, plan.table, plan.key, from_key, rows_done, batches_done],
    ).fetchone()
    if row is not None:
        return row[0]
    run_ref, undone_by, changed = conn.execute(
        sql.SQL("SELECT id, undone_by, EXISTS (SELECT FROM {images} WHERE run_ref = r.id) FROM {runs} r "
                "WHERE backfill = %s AND run_id = %s").format(runs=RUNS, images=IMAGES), [plan.name, run_id]).fetchone()
    if undone_by is not None:
        raise CaptureError(f"backfill {plan.name}: run {run_id} was undone by run {undone_by}; launch a new run")
    if restart and changed:
        raise CaptureError(f"backfill {plan.name}: run {run_id} has already changed rows, and restart: true would go over "
                           "them again; launch a new run to restart")
    return run_ref


def unfinished_undo(conn: psycopg.Connection, backfill: str) -> str | None:
    """The run id of a run of `backfill` whose undo started and has not finished, or None."""
    row = conn.execute(
        sql.SQL("""SELECT r.run_id FROM {runs} r JOIN {checkpoints} c ON c.name = 'undo:' || r.backfill || ':' || r.run_id
                   WHERE r.backfill = %s AND r.undone_at IS NULL ORDER BY r.id DESC LIMIT 1""").format(
            runs=RUNS, checkpoints=CHECKPOINTS),
        [backfill],
    ).fetchone()
    return row[0] if row else None


# --- which columns a change touches ------------------------------------------------------------

_PLACEHOLDER = re.compile(r"%\(\w+\)s|%s|%%")


def set_columns(assignments: str) -> list[str]:
    """The columns a SET list assigns, read by PostgreSQL's parser (placeholders read as NULL)."""
    text = _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else "NULL", assignments)
    try:
        [raw] = parse_sql(f"UPDATE _hrms_capture SET {text}")
    except (ParseError, ValueError) as exc:
        raise CaptureError(f"cannot read the SET list {assignments!r}: {exc}") from None
    names: list[str] = []
    for target in raw.stmt.targetList:
        if target.name not in names:
            names.append(target.name)
    return names


@dataclass(frozen=True)
class TableShape:
    columns: tuple[str, ...]
    """Columns that can be written (not dropped, not generated), in table order."""
    types: dict[str, str]
    """Their types as SQL (format_type), to read their text form back."""
    whole_row: bool
    """A BEFORE UPDATE row trigger may change any column: record them all."""

    @classmethod
    def read(cls, conn: psycopg.Connection, table: str) -> TableShape:
        regclass = f"{settings.HR_SCHEMA}.{table}"
        rows = conn.execute(
            """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
               WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
               ORDER BY attnum""", [regclass]).fetchall()
        trigger = conn.execute(
            """SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal
                              AND tgtype & 1 = 1 AND tgtype & 2 = 2 AND tgtype & 16 = 16)""", [regclass]).fetchone()[0]
        return cls(columns=tuple(r[0] for r in rows), types=dict(rows), whole_row=trigger)

    def type_sql(self, column: str) -> sql.Composable:
        return sql.SQL(self.types[column])  # type: ignore[arg-type]  # PostgreSQL's own spelling of the type


FORMATS = {"DateStyle": "ISO", "IntervalStyle": "postgres", "bytea_output": "hex", "extra_float_digits": "1"}


def pin_formats(conn: psycopg.Connection) -> None:
    """For the rest of the transaction: output formats that make a value's text form exact and the
    same wherever it is read (see the module docstring). Only output changes; input is as before."""
    conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)) for k, v in FORMATS.items())))


def _aliases(prefix: str, columns: list[str]) -> list[sql.Identifier]:
    return [sql.Identifier(f"_hrms_{prefix}{i}") for i in range(len(columns))]


# --- the capturing update ----------------------------------------------------------------------

@dataclass
class Capture:
    """Records the before-image of every row a run's `batch.update` changes (one per run)."""

    plan: Plan
    run_ref: int
    shape: TableShape
    returning_old: bool
    _columns: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def start(cls, conn: psycopg.Connection, plan: Plan, run_ref: int, *, returning_old: bool | None = None) -> Capture:
        if returning_old is None:
            returning_old = conn.info.server_version >= RETURNING_OLD_VERSION
        return cls(plan=plan, run_ref=run_ref, shape=TableShape.read(conn, plan.table), returning_old=returning_old)

    def columns(self, assignments: str, declared: list[str] | tuple[str, ...] | None) -> list[str]:
        """The columns to record for this SET list."""
        if self.shape.whole_row:
            return [c for c in self.shape.columns if c != self.plan.key]
        key = assignments if declared is None else "\0".join(declared)
        if key not in self._columns:
            names = list(declared) if declared is not None else set_columns(assignments)
            if self.plan.key in names:
                raise CaptureError(f"backfill {self.plan.name} changes the key {self.plan.key} of {self.plan.qualified_table}; "
                                   "a backfill changes other columns of a row, never its key")
            unknown = [n for n in names if n not in self.shape.columns]
            if unknown:
                raise CaptureError(f"backfill {self.plan.name}: {', '.join(unknown)} is not a writable column of "
                                   f"{self.plan.qualified_table}")
            self._columns[key] = names
        return self._columns[key]

    def update(self, batch: Batch, assignments: sql.Composable, values: dict[str, Any],
               declared: list[str] | tuple[str, ...] | None = None) -> int:
        """The batch's UPDATE, recording the before-image of each row it changes; returns rows updated."""
        columns = self.columns(assignments.as_string(batch.conn), declared)
        plan = self.plan
        table, key = plan.table_sql, sql.Identifier(plan.key)
        olds, news = _aliases("b", columns), _aliases("a", columns)
        idents = [sql.Identifier(c) for c in columns]
        if batch.steps == 0:
            pin_formats(batch.conn)
        if self.returning_old:
            changed = sql.SQL(
                "UPDATE {table} SET {assignments} WHERE {key} BETWEEN %(_first_key)s AND %(_last_key)s AND ({pending}) "
                "RETURNING {key} AS _hrms_key, {returned}"
            ).format(table=table, assignments=assignments, key=key, pending=plan.pending_sql,
                     returned=sql.SQL(", ").join(
                         [sql.SQL("old.{}::text AS {}").format(c, o) for c, o in zip(idents, olds)]
                         + [sql.SQL("new.{}::text AS {}").format(c, n) for c, n in zip(idents, news)]))
            prior = sql.SQL("")
        else:
            prior = sql.SQL(
                "_hrms_prior AS (SELECT {key} AS _hrms_key, {snapshot} FROM {table} "
                "WHERE {key} BETWEEN %(_first_key)s AND %(_last_key)s AND ({pending})), "
            ).format(key=key, table=table, pending=plan.pending_sql, snapshot=sql.SQL(", ").join(
                sql.SQL("{}::text AS {}").format(c, o) for c, o in zip(idents, olds)))
            changed = sql.SQL(
                "UPDATE {table} SET {assignments} FROM _hrms_prior WHERE {table}.{key} = _hrms_prior._hrms_key "
                "AND ({pending}) AND ROW({current}) IS NOT DISTINCT FROM ROW({snapshot}) "
                "RETURNING {table}.{key} AS _hrms_key, {returned}"
            ).format(table=table, assignments=assignments, key=key, pending=plan.pending_sql,
                     current=sql.SQL(", ").join(sql.SQL("{}.{}::text").format(table, c) for c in idents),
                     snapshot=sql.SQL(", ").join(sql.SQL("_hrms_prior.{}").format(o) for o in olds),
                     returned=sql.SQL(", ").join(
                         [sql.SQL("_hrms_prior.{}").format(o) for o in olds]
                         + [sql.SQL("{}.{}::text AS {}").format(table, c, n) for c, n in zip(idents, news)]))
        query = sql.SQL(
            "WITH {prior}_hrms_changed AS ({changed}), "
            "_hrms_kept AS (INSERT INTO {images} (run_ref, batch_key, step, columns, keys, before, after) "
            "SELECT %(_hrms_run_ref)s, %(_last_key)s, %(_hrms_step)s, %(_hrms_columns)s, array_agg(_hrms_key), "
            "ARRAY[{before}], ARRAY[{after}] FROM _hrms_changed HAVING count(*) > 0) "
            "SELECT count(*) FROM _hrms_changed"
        ).format(prior=prior, changed=changed, images=IMAGES,
                 before=sql.SQL(", ").join(sql.SQL("array_agg({})::text").format(o) for o in olds),
                 after=sql.SQL(", ").join(sql.SQL("array_agg({})::text").format(n) for n in news))
        step = batch.steps
        batch.steps += 1
        return batch.conn.execute(query, {**values, "_hrms_run_ref": self.run_ref, "_hrms_step": step,
                                          "_hrms_columns": columns}).fetchone()[0]

    @property
    def description(self) -> str:
        scope = ("whole rows (the table has a BEFORE UPDATE trigger)" if self.shape.whole_row
                 else "the columns each SET list assigns")
        how = "RETURNING old" if self.returning_old else "a snapshot join (PostgreSQL before 18)"
        return f"previous values of {scope}, read by {how}, in core_backfillundo"
