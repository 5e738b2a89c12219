"""What a backfill run records so that it can be undone (undo.py puts it back).

- `core_backfillrun`: one row per run of a backfill (checkpoint name, Dagster run id, table, and
  where its checkpoint stood when it started), written with the checkpoint's start.
- `core_backfillundo`: the before-image of every row the run changed: its key, and the changed
  columns' values before and after, as jsonb. The batch's UPDATE writes it itself, in the same
  statement and so the same transaction as the change and the checkpoint: a run killed at any
  instant leaves exactly the images of its committed batches, and no image without its change.

Which columns a change touches is read from the SET list of `batch.update` with PostgreSQL's own
parser (pglast): `line_total = round(amount * quantity, 2), updated_at = now()` records line_total
and updated_at. A table with a BEFORE UPDATE row trigger (which may change any column) records every
column instead. Generated columns are never recorded (PostgreSQL recomputes them).

One statement per batch, no Python per row:

    PostgreSQL 18+:  WITH c AS (UPDATE t SET ... WHERE <batch> RETURNING key, old image, new image)
                     INSERT INTO core_backfillundo SELECT ... FROM c WHERE the images differ
    older servers:   the same, the old image read from a snapshot join (UPDATE t ... FROM (SELECT key,
                     image FROM t WHERE <batch>) p WHERE t.key = p.key AND t's image = p's image), so a
                     row changed by someone else between the snapshot and the update is left alone
                     rather than recorded with a stale image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from pglast import parse_sql
from pglast.parser import ParseError

from hrms_pipelines import settings
from hrms_pipelines.backfills.registry import BackfillError

if TYPE_CHECKING:
    from hrms_pipelines.backfills.registry import Batch, Plan

RUNS = sql.Identifier(settings.HR_SCHEMA, "core_backfillrun")
IMAGES = sql.Identifier(settings.HR_SCHEMA, "core_backfillundo")
CHECKPOINTS = sql.Identifier(settings.HR_SCHEMA, "core_backfillcheckpoint")
RETURNING_OLD_VERSION = 180000  # PostgreSQL 18: RETURNING old.*, new.*
_JSONB_PAIRS = 50  # jsonb_build_object takes at most 100 arguments


class CaptureError(BackfillError):
    """The change of a backfill cannot be recorded for undo; says what to write instead."""


def undo_checkpoint_name(backfill: str, run_id: str) -> str:
    """The checkpoint of the undo of one run of `backfill`."""
    return f"undo:{backfill}:{run_id}"


# --- run records --------------------------------------------------------------------------------

def start_run(conn: psycopg.Connection, plan: Plan, run_id: str, checkpoint: tuple[int | None, int, int]) -> int:
    """Record a run of `plan` (inside the transaction that starts its checkpoint); returns its id.

    `checkpoint` is (last key, rows done, batches done) as the run starts, after a restart reset:
    an undo of this run (when no later run is left) rewinds the checkpoint to it. A retried step of
    the same Dagster run keeps the first record."""
    from_key, rows_done, batches_done = checkpoint
    row = conn.execute(
        sql.SQL("""INSERT INTO {runs} (backfill, run_id, table_name, key_column, from_key, rows_done_before,
                                       batches_done_before)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (backfill, run_id) DO NOTHING RETURNING id""").format(
            runs=RUNS),
        [plan.name, run_id, plan.table, plan.key, from_key, rows_done, batches_done],
    ).fetchone()
    if row is None:
        row = conn.execute(sql.SQL("SELECT id, undone_by FROM {} WHERE backfill = %s AND run_id = %s").format(RUNS),
                           [plan.name, run_id]).fetchone()
        if row[1] is not None:
            raise CaptureError(f"backfill {plan.name}: run {run_id} was undone by run {row[1]}; launch a new run")
    return row[0]


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
    whole_row: bool
    """A BEFORE UPDATE row trigger may change any column: record them all."""

    @classmethod
    def read(cls, conn: psycopg.Connection, table: str) -> TableShape:
        regclass = f"{settings.HR_SCHEMA}.{table}"
        rows = conn.execute(
            """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
                 AND attgenerated = '' ORDER BY attnum""", [regclass]).fetchall()
        trigger = conn.execute(
            """SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal
                              AND tgtype & 1 = 1 AND tgtype & 2 = 2 AND tgtype & 16 = 16)""", [regclass]).fetchone()[0]
        return cls(columns=tuple(r[0] for r in rows), whole_row=trigger)


def image(columns: list[str] | tuple[str, ...], qualifier: sql.Composable | None = None) -> sql.Composable:
    """`jsonb_build_object('c1', <q>.c1, ...)` (chunks joined with || past 50 columns)."""
    def ref(column: str) -> sql.Composable:
        return sql.SQL("{}.{}").format(qualifier, sql.Identifier(column)) if qualifier is not None else sql.Identifier(column)

    chunks = [columns[i:i + _JSONB_PAIRS] for i in range(0, len(columns), _JSONB_PAIRS)] or [[]]
    return sql.SQL(" || ").join(
        sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c), ref(c)) for c in chunk))
        for chunk in chunks)


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
        if self.returning_old:
            changed = sql.SQL(
                "UPDATE {table} SET {assignments} WHERE {key} BETWEEN %(_first_key)s AND %(_last_key)s AND ({pending}) "
                "RETURNING {key} AS _hrms_key, {before} AS _hrms_before, {after} AS _hrms_after"
            ).format(table=table, assignments=assignments, key=key, pending=plan.pending_sql,
                     before=image(columns, sql.SQL("old")), after=image(columns, sql.SQL("new")))
            prior = sql.SQL("")
        else:
            qualified = image(columns, table)
            prior = sql.SQL(
                "_hrms_prior AS (SELECT {key} AS _hrms_key, {snapshot} AS _hrms_before FROM {table} "
                "WHERE {key} BETWEEN %(_first_key)s AND %(_last_key)s AND ({pending})), "
            ).format(key=key, snapshot=image(columns), table=table, pending=plan.pending_sql)
            changed = sql.SQL(
                "UPDATE {table} SET {assignments} FROM _hrms_prior WHERE {table}.{key} = _hrms_prior._hrms_key "
                "AND ({pending}) AND {qualified}::text = _hrms_prior._hrms_before::text "
                "RETURNING {table}.{key} AS _hrms_key, _hrms_prior._hrms_before, {qualified} AS _hrms_after"
            ).format(table=table, assignments=assignments, key=key, pending=plan.pending_sql, qualified=qualified)
        query = sql.SQL(
            "WITH {prior}_hrms_changed AS ({changed}), "
            "_hrms_kept AS (INSERT INTO {images} (run_ref, row_key, before, after) "
            "SELECT %(_hrms_run_ref)s, _hrms_key, _hrms_before, _hrms_after FROM _hrms_changed "
            "WHERE _hrms_before::text IS DISTINCT FROM _hrms_after::text) "
            "SELECT count(*) FROM _hrms_changed"
        ).format(prior=prior, changed=changed, images=IMAGES)
        return batch.conn.execute(query, {**values, "_hrms_run_ref": self.run_ref}).fetchone()[0]

    @property
    def description(self) -> str:
        scope = ("whole rows (the table has a BEFORE UPDATE trigger)" if self.shape.whole_row
                 else "the columns each SET list assigns")
        how = "RETURNING old" if self.returning_old else "a snapshot join (PostgreSQL before 18)"
        return f"previous values of {scope}, read by {how}, in core_backfillundo"
