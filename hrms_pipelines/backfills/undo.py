"""Puts back what backfill runs changed, from the before-images they recorded (capture.py).

Which runs: those of one backfill (its registered or checkpoint name), or one run id, or both; the
newest first, so a row two runs changed ends at its value before the first. A run already undone
is refused (a run is undone once: it is marked, and the mark is final).

Each run's undo is a plan the backfill engine runs like any backfill: keyset batches over the run's
before-images (ordered by the changed rows' keys), each batch one short transaction as the import
role with its checkpoint (`undo:<backfill>:<run id>`) and an audit row (action 'undo'), the same
throttle (sleep, adaptive size, pause while the database is busy, retries smaller on lock timeouts),
resumable after a kill. One statement per batch decides, row by row:

    restore   the row still holds what the backfill wrote: its previous values go back;
    already   it holds its previous values again: nothing to do;
    changed   someone changed it since (it holds neither): left as it is and reported (key, column,
              and the values masked where privacy.py says so), unless `overwrite_changed`; then it
              is restored too and the values it held are kept in the audit log (action 'undo');
    missing   the row is gone: reported.

Column by column: only the columns the backfill changed in a row (recorded, and different before and
after) count and go back; a row is "changed since" only when one of *those* changed since, so an
application that edited another column of the row meanwhile does not stop its undo. `updated_at`
(BOOKKEEPING) never counts, and goes back only where it still holds what the backfill wrote (nothing
else changed the row); elsewhere the application's later time stays.

"Holds what the backfill wrote" compares each counted column's text form, under the same pinned
output formats as when it was recorded (capture.pin_formats), so session settings cannot fake a
difference; values go back through their type's input (format_type of the column).

When the run is undone it is marked (by which run, when, the counts), and, when no later run of the
backfill is left, the backfill's checkpoint is rewound to where the run started (status 'undone'),
so launching the backfill again applies it again. A backfill refuses to run while an undo of it is
unfinished.

A dry run classifies the same way, in read-only batches, and changes nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hrms_pipelines import locks, privacy
from hrms_pipelines.backfills import capture, engine
from hrms_pipelines.backfills.capture import CHECKPOINTS, IMAGES, RUNS
from hrms_pipelines.backfills.registry import Backfill, Batch, Options, Plan
from hrms_pipelines.backfills.restore_sql import RestoreSql, RunRecord, UndoError
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import IMPORTER, HrmsDatabase, local_transaction

DEFAULTS = Options(batch_size=1, min_batch_size=1, max_batch_size=50, sleep_seconds=0.1, target_batch_ms=200)
"""An undo batch is one or more of the backfill's recorded batches (one to start with, each about the
size the backfill's throttle chose), then sized toward the target like any backfill."""
EXAMPLES = 20
"""Rows changed since shown in the report (each with its recorded columns), per undo."""
SAMPLES = 10
"""Rows a dry run shows it would restore."""
PREVIEW_BATCH = 20
"""Recorded batches a dry run classifies per (read-only) statement."""
IMAGES_TABLE = "core_backfillundo"


def find_runs(conn: psycopg.Connection, *, backfill: str | None, run_id: str | None) -> list[RunRecord]:
    """The runs to undo, newest first: every run of `backfill` not undone yet, or the run `run_id`
    (of `backfill`, when both are given). Clear errors when there is nothing to undo."""
    backfill = (backfill or "").strip() or None
    run_id = (run_id or "").strip() or None
    if backfill is None and run_id is None:
        raise UndoError("undo_backfill needs the backfill (its registered name, or the checkpoint name a field backfill "
                        "logged, e.g. field:employees_employee.department_code:1a2b3c4d5e) or a run id, or both")
    rows = conn.execute(
        sql.SQL("""SELECT id, backfill, run_id, table_name, key_column, started_at, undone_at, undone_by FROM {runs}
                   WHERE (%(backfill)s::text IS NULL OR backfill = %(backfill)s)
                     AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s)
                   ORDER BY id DESC""").format(runs=RUNS),
        {"backfill": backfill, "run_id": run_id},
    ).fetchall()
    runs = [RunRecord(*row) for row in rows]
    what = " ".join(part for part in (f"backfill {backfill}" if backfill else "", f"run {run_id}" if run_id else "") if part)
    if not runs:
        known = [r[0] for r in conn.execute(
            sql.SQL("SELECT backfill FROM {} GROUP BY backfill ORDER BY max(id) DESC LIMIT 20").format(RUNS))]
        raise UndoError(f"no recorded run of {what}: nothing to undo (runs from before undo records existed, migration "
                        f"core/0004, cannot be undone). Backfills with recorded runs: {', '.join(known) or 'none'}")
    if len({r.backfill for r in runs}) > 1:
        raise UndoError(f"run {run_id} ran several backfills ({', '.join(sorted({r.backfill for r in runs}))}); "
                        "name the one to undo as well")
    open_runs = [r for r in runs if r.undone_at is None]
    if not open_runs:
        last = runs[0]
        raise UndoError(f"{what} is already undone (run {last.run_id} by run {last.undone_by} at "
                        f"{last.undone_at:%Y-%m-%d %H:%M:%S %Z}); a run is undone once")
    return open_runs


# --- what an undo reports ----------------------------------------------------------------------

@dataclass
class RunOutcome:
    run: RunRecord
    restored: int = 0
    overwritten: int = 0
    already: int = 0
    changed: int = 0
    """Changed since the backfill and left as they are."""
    missing: int = 0
    status: str = "pending"
    """undone | stopped (max_batches; launch again) | dry_run"""
    batches: int = 0
    duration_s: float = 0.0
    rewound: bool = False

    def summary(self) -> dict[str, Any]:
        return {"rows_restored": self.restored, "rows_overwritten": self.overwritten, "rows_already_back": self.already,
                "rows_changed_since_left": self.changed, "rows_missing": self.missing}


@dataclass
class UndoReport:
    backfill: str
    dry_run: bool
    overwrite_changed: bool
    undo_run_id: str
    runs: list[RunOutcome] = field(default_factory=list)
    changed_rows: list[list[Any]] = field(default_factory=list)
    """[state, run, key, column, before the backfill, the backfill wrote, now], values masked."""
    sample_rows: list[list[Any]] = field(default_factory=list)
    """Dry run: some rows that would be restored, same columns."""

    def total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.runs)

    @property
    def complete(self) -> bool:
        return all(r.status in ("undone", "dry_run") for r in self.runs)

    def figures(self) -> dict[str, Any]:
        """Numbers for the Dagster UI."""
        return {
            "backfill": self.backfill, "dry_run": self.dry_run, "overwrite_changed": self.overwrite_changed,
            "runs": len(self.runs), "runs_undone": sum(r.status == "undone" for r in self.runs),
            ("rows_to_restore" if self.dry_run else "rows_restored"): self.total("restored"),
            "rows_overwritten": self.total("overwritten"), "rows_already_back": self.total("already"),
            ("rows_changed_since" if self.dry_run else "rows_changed_since_left"): self.total("changed"),
            "rows_missing": self.total("missing"),
        }

    def tables(self) -> dict[str, str]:
        """Markdown tables: the runs, and the rows changed since (values masked; a dry run adds rows it would restore)."""
        heads = ["state", "run", "key", "column", "before the backfill", "the backfill wrote", "now"]
        tables = {"undone_runs": markdown_table(
            ["run", "table", "started", "status", "would restore" if self.dry_run else "restored", "overwritten",
             "already back", "changed since" + ("" if self.dry_run else " (left)"), "missing", "checkpoint rewound"],
            [[r.run.run_id, r.run.qualified_table, f"{r.run.started_at:%Y-%m-%d %H:%M:%S}", r.status, r.restored,
              r.overwritten, r.already, r.changed, r.missing, "yes" if r.rewound else "no"] for r in self.runs])}
        if self.changed_rows:
            tables["rows_changed_since_examples"] = markdown_table(heads, self.changed_rows)
        if self.sample_rows:
            tables["rows_to_restore_examples"] = markdown_table(heads, self.sample_rows)
        return tables


def _masked_details(conn: psycopg.Connection, restore: RestoreSql, bounds: tuple[int, int], keys: list[int],
                    state: str) -> list[list[Any]]:
    """Report rows for `keys` (of the recorded batches in `bounds`), every value masked where privacy.py says."""
    rows = conn.execute(restore.details(), {"_run_ref": restore.run.id, "_first_key": bounds[0], "_last_key": bounds[1],
                                            "_keys": keys}).fetchall()
    table = restore.run.table
    return [[state, restore.run.run_id, key, column,
             privacy.mask_cell(column, before, table), privacy.mask_cell(column, wrote, table),
             "(row gone)" if gone else privacy.mask_cell(column, now, table)]
            for key, column, before, wrote, now, gone in rows]


# --- running it ---------------------------------------------------------------------------------

def undo_plan(run: RunRecord, report: UndoReport, outcome: RunOutcome) -> Backfill:
    """The undo of `run` as a backfill the engine runs (it records nothing for undo itself)."""
    name = run.checkpoint_name

    def prepare(conn: psycopg.Connection) -> Plan:
        restore = RestoreSql.read(conn, run)
        statement = restore.restore()

        def apply(batch: Batch) -> int:
            capture.pin_formats(batch.conn)
            restored, overwritten, already, changed_keys, missing_keys = batch.conn.execute(statement, {
                "_run_ref": run.id, "_first_key": batch.first_key, "_last_key": batch.last_key,
                "_overwrite": report.overwrite_changed, "_undo_run": report.undo_run_id,
                "_source": f"undo:{run.backfill}", "_table": run.table,
            }).fetchone()
            outcome.restored += restored
            outcome.overwritten += overwritten
            outcome.already += already
            outcome.changed += len(changed_keys)
            outcome.missing += len(missing_keys)
            batch.details.update({
                "undo_of": {"backfill": run.backfill, "run_id": run.run_id}, "key_column": run.key,
                "rows_restored": restored, "rows_overwritten": overwritten, "rows_already_back": already,
                "rows_changed_since_left": changed_keys, "rows_missing": missing_keys})
            bounds = (batch.first_key, batch.last_key)
            for keys, state in ((changed_keys, "changed since"), (missing_keys, "missing")):
                room = EXAMPLES - len(report.changed_rows)
                if room > 0 and keys:
                    report.changed_rows += _masked_details(batch.conn, restore, bounds, keys[:room], state)
            return restored

        return Plan(
            name=name, table=IMAGES_TABLE, key="batch_key", pending=None, apply=apply, unit="recorded batches",
            scope=sql.SQL("run_ref = %(_run_ref)s"), bind={"_run_ref": run.id}, undoable=False, action="undo",
            changes_table=run.table, changes_key=run.key, audit_source=f"undo:{run.backfill}",
            params={"undo_of": {"backfill": run.backfill, "run_id": run.run_id, "table": run.qualified_table},
                    "overwrite_changed": report.overwrite_changed},
        )

    return Backfill(name=name, description=f"undo of backfill {run.backfill} run {run.run_id}", table=IMAGES_TABLE,
                    defaults=DEFAULTS, prepare=prepare, kind="undo")


def _mark(conn: psycopg.Connection, run: RunRecord, outcome: RunOutcome, undo_run_id: str, rows_done: int) -> bool:
    """Mark `run` undone and, when no later run of its backfill is left, rewind the backfill's
    checkpoint to where the run started; returns whether it was rewound."""
    summary = {**outcome.summary(), "rows_restored_all_launches": rows_done}
    with local_transaction(conn):
        conn.execute(sql.SQL("UPDATE {} SET undone_at = now(), undone_by = %s, undo_summary = %s "
                             "WHERE id = %s AND undone_at IS NULL").format(RUNS), [undo_run_id, Jsonb(summary), run.id])
        return conn.execute(
            sql.SQL("""UPDATE {checkpoints} c SET status = 'undone', last_key = r.from_key, rows_done = r.rows_done_before,
                              batches_done = r.batches_done_before, updated_at = now(), finished_at = NULL,
                              params = c.params || jsonb_build_object('undone_by', %(undo_run)s::text, 'undone_run', r.run_id)
                       FROM {runs} r
                       WHERE r.id = %(id)s AND c.name = r.backfill
                         AND NOT EXISTS (SELECT FROM {runs} later WHERE later.backfill = r.backfill AND later.id > r.id
                                                                   AND later.undone_at IS NULL)""").format(
                checkpoints=CHECKPOINTS, runs=RUNS),
            {"undo_run": undo_run_id, "id": run.id}).rowcount > 0


def _preview(conn: psycopg.Connection, run: RunRecord, report: UndoReport, outcome: RunOutcome) -> None:
    """Classify every row of `run` in read-only batches; change nothing."""
    restore = RestoreSql.read(conn, run)
    statement = restore.classify()
    bounds = sql.SQL("""SELECT min(batch_key), max(batch_key), count(*) FROM (
                            SELECT batch_key FROM {images} WHERE run_ref = %(_run_ref)s
                              AND (%(_after)s::bigint IS NULL OR batch_key > %(_after)s)
                            ORDER BY batch_key LIMIT %(_limit)s) b""").format(images=IMAGES)
    after: int | None = None
    while True:
        with local_transaction(conn, statement_timeout=engine.COUNT_TIMEOUT, force_rollback=True):
            capture.pin_formats(conn)
            first, last, rows = conn.execute(bounds, {"_run_ref": run.id, "_after": after, "_limit": PREVIEW_BATCH}).fetchone()
            if not rows:
                break
            restore_n, already, changed, missing, changed_keys, restore_keys = conn.execute(statement, {
                "_run_ref": run.id, "_first_key": first, "_last_key": last, "_examples": EXAMPLES}).fetchone()
            outcome.restored += restore_n
            outcome.already += already
            outcome.changed += changed
            outcome.missing += missing
            outcome.batches += 1
            room = EXAMPLES - len(report.changed_rows)
            if room > 0 and changed_keys:
                report.changed_rows += _masked_details(conn, restore, (first, last), changed_keys[:room], "changed since")
            room = SAMPLES - len(report.sample_rows)
            if room > 0 and restore_keys:
                report.sample_rows += _masked_details(conn, restore, (first, last), restore_keys[:room], "would restore")
        after = last


def undo(db: HrmsDatabase, *, backfill: str | None = None, run_id: str | None = None, options: Options, log: engine.Log,
         overwrite_changed: bool = False, dry_run: bool = False, undo_run_id: str | None = None) -> UndoReport:
    """Undo the chosen runs (see the module docstring); raises UndoError when there is nothing to undo."""
    options.validate()
    with db.connection(IMPORTER, autocommit=True) as conn:
        runs = find_runs(conn, backfill=backfill, run_id=run_id)
        name = runs[0].backfill
        report = UndoReport(backfill=name, dry_run=dry_run, overwrite_changed=overwrite_changed,
                            undo_run_id=undo_run_id or f"local-{uuid.uuid4()}")
        log.info(f"undo of backfill {name}: {len(runs)} run(s), newest first: {', '.join(r.run_id for r in runs)}"
                 + (" (dry run: nothing changes)" if dry_run else "")
                 + ("; rows changed since the backfill are overwritten" if overwrite_changed and not dry_run else ""))
        try:
            # The backfill itself must not run meanwhile (it would change rows being put back).
            with locks.session_lock(conn, locks.backfill_lock(name), wait=options.lock_wait):
                for run in runs:
                    outcome = RunOutcome(run=run)
                    report.runs.append(outcome)
                    if dry_run:
                        started = time.monotonic()
                        _preview(conn, run, report, outcome)
                        outcome.status, outcome.duration_s = "dry_run", time.monotonic() - started
                        log.info(f"undo of backfill {name} run {run.run_id} (dry run): {outcome.restored:,} rows of "
                                 f"{run.qualified_table} would be restored, {outcome.already:,} already back, "
                                 f"{outcome.changed:,} changed since, {outcome.missing:,} missing")
                        continue
                    result = engine.run(db, undo_plan(run, report, outcome), options, log=log, run_id=report.undo_run_id)
                    outcome.batches, outcome.duration_s = result.batches, result.duration_s
                    if result.status != "completed":
                        outcome.status = "stopped"
                        log.info(f"undo of backfill {name} run {run.run_id} stopped after {result.batches} batches "
                                 "(max_batches); launch undo_backfill again to resume it")
                        break
                    outcome.rewound = _mark(conn, run, outcome, report.undo_run_id, result.checkpoint_rows_done)
                    outcome.status = "undone"
                    log.info(f"undo of backfill {name} run {run.run_id}: {outcome.restored:,} rows of {run.qualified_table} "
                             f"restored ({outcome.overwritten:,} of them changed since and overwritten), "
                             f"{outcome.already:,} already back, {outcome.changed:,} changed since and left as they are, "
                             f"{outcome.missing:,} missing; the run is marked undone"
                             + ("; the backfill's checkpoint is rewound to where the run started" if outcome.rewound else ""))
        except locks.LockNotAvailable as exc:
            raise UndoError(f"undo of backfill {name}: the backfill is running ({exc}); wait for it to finish") from None
    changed = report.total("changed")
    if changed and not dry_run:
        log.warning(f"undo of backfill {name}: {changed:,} rows changed since the backfill were left with their current "
                    "values (listed, values masked, in the step's metadata; their keys in the audit log, action 'undo'). "
                    "The run is marked undone all the same. (overwrite_changed: true would have put them back too; a dry "
                    "run lists such rows before an undo.)")
    elif changed:
        log.warning(f"undo of backfill {name} (dry run): {changed:,} rows were changed since the backfill; an undo leaves "
                    "them as they are unless launched with overwrite_changed: true")
    return report
