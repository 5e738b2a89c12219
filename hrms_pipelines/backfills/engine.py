"""Runs a backfill: keyset batches on the primary key, each its own short transaction with its
checkpoint, throttled, resumable, with progress a user can watch.

One batch, in one transaction run as the import role (SELECT/INSERT/UPDATE only):

    SET LOCAL statement_timeout, lock_timeout; SET LOCAL ROLE hrms_importer
    SELECT min(id), max(id), count(*) FROM (SELECT id FROM t WHERE id > <checkpoint>
        AND <still needs the change> ORDER BY id LIMIT <n>) batch
    <the backfill's UPDATE of the rows in [min, max] that still need the change, which in the same
     statement writes each changed row's previous values to core_backfillundo (capture.py)>
    UPDATE core_backfillcheckpoint SET last_key = <last id>, rows_done = rows_done + <changed> ...
    INSERT INTO core_auditlog (one row for the batch: key range, rows changed)
    COMMIT

The checkpoint and the before-images commit with the batch or not at all, so a run killed at any
instant resumes exactly after the last committed batch, never applies a batch twice, and leaves
exactly the previous values of what it changed (undo.py puts them back). Between batches: a sleep, the
batch size adapted toward a target duration, and a pause while the database is busy.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hrms_pipelines import errors, locks, settings
from hrms_pipelines.metadata import duration
from hrms_pipelines.backfills import capture, throttle
from hrms_pipelines.backfills.throttle import busy_reason  # noqa: F401  (its home before throttle.py)
from hrms_pipelines.backfills.registry import Backfill, BackfillError, Batch, Options, Plan
from hrms_pipelines.resources import IMPORTER, HrmsDatabase, local_transaction

CHECKPOINTS = f"{settings.HR_SCHEMA}.core_backfillcheckpoint"
COUNT_TIMEOUT = "60s"
# A batch that fails on these is rolled back whole (checkpoint included) and retried smaller.
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled,
             psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


Log = throttle.Log


@dataclass
class Checkpoint:
    name: str
    status: str
    last_key: int | None
    rows_done: int
    batches_done: int


@dataclass
class Result:
    name: str
    table: str
    status: str  # completed | stopped (max_batches, max_runtime_seconds) | dry_run
    dry_run: bool = False
    rows_changed: int = 0
    rows_scanned: int = 0
    batches: int = 0
    duration_s: float = 0.0
    rows_left: int | None = None
    """Rows of the whole table that still need the change after this run."""
    would_change: int | None = None
    resumed_from_key: int | None = None
    last_key: int | None = None
    batch_ms: list[float] = field(default_factory=list)
    final_batch_size: int = 0
    paused_s: float = 0.0
    retries: int = 0
    replica_paused_s: float = 0.0
    batches_that_blocked: int = 0
    """Batches some other session waited on (the next batch was then smaller, the pause longer)."""
    bystanders_waited: int = 0
    """Sessions counted waiting on a batch's locks, over all batches."""
    checkpoint_rows_done: int = 0
    run_id: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_changed / self.duration_s if self.duration_s > 0 else 0.0

    def batch_ms_percentile(self, q: float) -> float:
        return percentile(self.batch_ms, q)

    def metadata(self) -> dict[str, Any]:
        """Numbers for the Dagster UI (None values left out)."""
        data: dict[str, Any] = {
            "backfill": self.name, "table": self.table, "status": self.status, "dry_run": self.dry_run,
            "rows_changed": self.rows_changed, "rows_left": self.rows_left, "would_change": self.would_change,
            "batches": self.batches, "duration_s": round(self.duration_s, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "batch_ms_p50": round(self.batch_ms_percentile(50), 1), "batch_ms_p99": round(self.batch_ms_percentile(99), 1),
            "batch_ms_max": round(max(self.batch_ms, default=0.0), 1), "final_batch_size": self.final_batch_size,
            "paused_s": round(self.paused_s, 1), "replica_paused_s": round(self.replica_paused_s, 1),
            "retries": self.retries, "batches_that_blocked": self.batches_that_blocked,
            "bystanders_waited": self.bystanders_waited,
            "resumed_from_key": self.resumed_from_key, "last_key": self.last_key,
            "checkpoint_rows_done": self.checkpoint_rows_done,
        }
        return {k: v for k, v in data.items() if v is not None}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class BatchSizer:
    """Keeps batches near `target_batch_ms`: estimates the time per row (reacting at once to a slow
    batch, slowly to fast ones), sizes the next batch for AIM x the target (headroom for the noise of
    checkpoints, autovacuum and neighbours, so that batches stay under the target rather than
    around it), and changes the size by at most x0.5 .. x1.25 per batch. Without a target the size
    stays fixed.

    Bystanders: after a batch that another session waited on (`blocked`), the next batch is half
    as large and the pause after it longer (doubling, up to MAX_EXTRA_PAUSE); each batch nobody
    waited on halves the extra pause again and lets the size grow back (x1.25 per batch)."""

    AIM = 0.8
    GROWTH = 1.25
    SHRINK = 0.5
    MAX_EXTRA_PAUSE = 2.0
    FIRST_EXTRA_PAUSE = 0.05

    def __init__(self, options: Options) -> None:
        self.options = options
        self.size = min(max(options.batch_size, options.min_batch_size), options.max_batch_size) \
            if options.target_batch_ms is not None else options.batch_size
        self.ms_per_row: float | None = None
        self.extra_pause = 0.0
        """Seconds added to the pause after each batch, while batches make other sessions wait."""
        self.ceiling: int | None = None
        """The size before bystanders shrank it: a fixed-size backfill grows back to it."""

    def blocked(self, sessions: int) -> None:
        """The last batch made `sessions` other sessions wait (0: none)."""
        if sessions <= 0:
            self.extra_pause = 0.0 if self.extra_pause < 0.01 else self.extra_pause / 2
            if self.ceiling is not None and self.options.target_batch_ms is None:
                self.size = min(self.ceiling, max(self.size + 1, int(self.size * self.GROWTH)))
                if self.size >= self.ceiling:
                    self.ceiling = None
            return
        if self.ceiling is None:
            self.ceiling = self.size
        self.size = max(self._floor, int(self.size * self.SHRINK))
        self.extra_pause = min(max(self.extra_pause * 2, self.FIRST_EXTRA_PAUSE), self.MAX_EXTRA_PAUSE)

    @property
    def _floor(self) -> int:
        return self.options.min_batch_size if self.options.target_batch_ms is not None else 1

    def record(self, rows: int, elapsed_ms: float, *, blocked: int = 0) -> None:
        target = self.options.target_batch_ms
        if target is None or rows == 0 or blocked:
            return
        per_row = elapsed_ms / rows
        if rows < self.size:  # a short (last) batch is mostly fixed cost: says little about a full one
            return
        if self.ms_per_row is None or per_row > self.ms_per_row:
            self.ms_per_row = per_row
        else:
            self.ms_per_row = 0.7 * self.ms_per_row + 0.3 * per_row
        wanted = self.AIM * target / self.ms_per_row if self.ms_per_row > 0 else self.size * self.GROWTH
        wanted = min(max(wanted, self.size * self.SHRINK), self.size * self.GROWTH)
        self.size = int(min(max(wanted, self.options.min_batch_size), self.options.max_batch_size))

    def shrink(self) -> None:
        self.size = max(self._floor, self.size // 2)


# --- checkpoints -------------------------------------------------------------------------------

def read_checkpoint(conn: psycopg.Connection, name: str) -> Checkpoint | None:
    row = conn.execute(
        f"SELECT name, status, last_key, rows_done, batches_done FROM {CHECKPOINTS} WHERE name = %s", [name]
    ).fetchone()
    return Checkpoint(*row) if row else None


def _start_checkpoint(conn: psycopg.Connection, plan: Plan, options: Options, *, restart: bool, run_id: str) -> int | None:
    """Start (or resume) the checkpoint and, for an undoable plan, record the run in the same
    transaction; returns the run's record id (None when the plan is not undoable)."""
    params = Jsonb({**plan.params, "options": {k: v for k, v in vars(options).items()}})
    with local_transaction(conn):
        state = conn.execute(
            f"""
            INSERT INTO {CHECKPOINTS} AS c (name, status, params, run_id) VALUES (%(name)s, 'running', %(params)s, %(run_id)s)
            ON CONFLICT (name) DO UPDATE SET
                status = 'running', params = EXCLUDED.params, run_id = EXCLUDED.run_id, updated_at = now(),
                finished_at = NULL,
                last_key     = CASE WHEN %(restart)s THEN NULL ELSE c.last_key END,
                rows_done    = CASE WHEN %(restart)s THEN 0 ELSE c.rows_done END,
                batches_done = CASE WHEN %(restart)s THEN 0 ELSE c.batches_done END,
                started_at   = CASE WHEN %(restart)s THEN now() ELSE c.started_at END
            RETURNING last_key, rows_done, batches_done
            """,
            {"name": plan.name, "params": params, "run_id": run_id, "restart": restart},
        ).fetchone()
        return capture.start_run(conn, plan, run_id, state, restart=restart) if plan.undoable else None


def _finish_checkpoint(conn: psycopg.Connection, name: str, status: str, error: str | None = None) -> None:
    with local_transaction(conn):
        conn.execute(
            f"""UPDATE {CHECKPOINTS} SET status = %(status)s, updated_at = now(),
                   finished_at = CASE WHEN %(status)s = 'completed' THEN now() END,
                   params = CASE WHEN %(error)s::text IS NULL THEN params - 'last_error'
                                 ELSE params || jsonb_build_object('last_error', %(error)s::text) END
               WHERE name = %(name)s""",
            {"status": status, "error": error, "name": name},
        )


# --- counting ----------------------------------------------------------------------------------

def _after_clause(plan: Plan, after: int | None) -> sql.Composable:
    if after is None:
        return sql.SQL("true")
    return sql.SQL("{} > %(_after)s").format(sql.Identifier(plan.key))


def count_pending(conn: psycopg.Connection, plan: Plan, after: int | None) -> int | None:
    """Rows after key `after` (all rows when None) that still need the change; None when the count
    does not finish within COUNT_TIMEOUT (a huge table under load).

    The count runs on one core: a parallel scan of a large table would take every core of the
    database server for its duration, which is what a throttled backfill exists to avoid."""
    query = sql.SQL("SELECT count(*) FROM {table} WHERE {after} AND {where}").format(
        table=plan.table_sql, after=_after_clause(plan, after), where=plan.where_sql)
    try:
        with local_transaction(conn, statement_timeout=COUNT_TIMEOUT):
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            return conn.execute(query, {**plan.bind, "_after": after}).fetchone()[0]
    except psycopg.errors.QueryCanceled:
        return None


def rows_left(conn: psycopg.Connection, plan: Plan, last_key: int | None) -> int | None:
    """What is left to do: with a predicate, every row of the table that needs the change; without
    one (checkpoint-guarded), the rows after the checkpoint."""
    return count_pending(conn, plan, None if plan.pending is not None else last_key)


# --- the run -----------------------------------------------------------------------------------

class _Progress:
    def __init__(self, name: str, total: int | None, every: float, log: Log, unit: str = "rows") -> None:
        self.name, self.total, self.every, self.log, self.unit = name, total, every, log, unit
        self.started = time.monotonic()
        self.last = self.started

    def line(self, result: Result, batch_size: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = result.rows_scanned / elapsed
        if self.total is None:
            left, eta = "unknown", "unknown"
        else:
            remaining = max(self.total - result.rows_scanned, 0)
            left = f"{remaining:,}"
            eta = duration(remaining / rate) if rate > 0 else "unknown"
        last_ms = result.batch_ms[-1] if result.batch_ms else 0.0
        return (f"backfill {self.name}: {result.rows_changed:,} rows changed, {left} left, {rate:,.0f} {self.unit}/s, "
                f"ETA {eta}; {result.batches:,} batches, batch size {batch_size:,}, last batch {last_ms:.0f} ms")

    def maybe_log(self, result: Result, batch_size: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log.info(self.line(result, batch_size))


def _run_batch(conn: psycopg.Connection, plan: Plan, options: Options, *, after: int | None, size: int,
               run_id: str, recorder: capture.Capture | None) -> tuple[int, int | None, int, int]:
    """One batch, the before-images of its rows, its checkpoint and audit row in one transaction;
    returns (rows in the batch, its last key, rows changed, sessions waiting on its locks just before
    it commits). Only the batch's bounds come back to Python, not its keys."""
    key = sql.Identifier(plan.key)
    bounds = sql.SQL(
        "SELECT min({key}), max({key}), count(*) FROM "
        "(SELECT {key} FROM {table} WHERE {after} AND {where} ORDER BY {key} LIMIT %(_limit)s) batch"
    ).format(key=key, table=plan.table_sql, after=_after_clause(plan, after), where=plan.where_sql)
    with local_transaction(conn, lock_timeout=options.lock_timeout,
                           statement_timeout=options.statement_timeout):
        first, last, rows = conn.execute(bounds, {**plan.bind, "_after": after, "_limit": size}).fetchone()
        if not rows:
            return 0, None, 0, 0
        batch = Batch(conn=conn, plan=plan, first_key=first, last_key=last, size=rows, capture=recorder)
        changed = plan.apply(batch)
        if recorder is not None and changed > batch.updated:
            raise BackfillError(
                f"backfill {plan.name}: the batch {plan.key} {first}..{last} reports {changed:,} rows changed but only "
                f"{batch.updated:,} went through batch.update, which records what it changes for undo; change rows only "
                "with batch.update. The batch was rolled back.")
        blocked = throttle.blocked_by_me(conn)
        conn.execute(
            f"""UPDATE {CHECKPOINTS} SET last_key = %s, rows_done = rows_done + %s, batches_done = batches_done + 1,
                   updated_at = now(),
                   params = CASE WHEN %s > 0 THEN params || jsonb_build_object('last_blocked_batch', jsonb_build_object(
                                'last_key', %s::bigint, 'rows', %s::int, 'sessions_waiting', %s::int, 'at', now()))
                            ELSE params END
               WHERE name = %s""",
            [last, changed, blocked, last, rows, blocked, plan.name],
        )
        conn.execute(
            f"""INSERT INTO {settings.HR_SCHEMA}.core_auditlog (run_id, source, action, table_name, row_key, after)
                VALUES (%s, %s, %s, %s, %s, %s)""",
            [run_id, plan.audit_source or f"backfill:{plan.name}", plan.action, plan.changes_table or plan.table,
             f"{plan.changes_key or plan.key} {first}..{last}",
             Jsonb({"backfill": plan.name, "rows_changed": changed, "rows_in_batch": rows,
                    "first_key": first, "last_key": last, "sessions_waiting": blocked, **batch.details})],
        )
    return rows, last, changed, blocked


def run(
    db: HrmsDatabase,
    backfill: Backfill,
    options: Options,
    *,
    log: Log,
    restart: bool = False,
    dry_run: bool = False,
    run_id: str | None = None,
) -> Result:
    """Run `backfill` until no row is left (or `options.max_batches`); see the module docstring.

    `run_id` names this run in the checkpoint, the audit log and the undo records (Dagster's run id;
    a fresh `local-<uuid>` when None)."""
    options.validate()
    run_id = run_id or f"local-{uuid.uuid4()}"
    with db.connection(IMPORTER, autocommit=True) as conn:
        try:
            with locks.session_lock(conn, locks.backfill_lock(backfill.name), wait=options.lock_wait):
                return _run_locked(conn, backfill, options, log=log, restart=restart, dry_run=dry_run, run_id=run_id)
        except locks.LockNotAvailable as exc:
            raise BackfillError(f"backfill {backfill.name}: another run of it is in progress ({exc}); "
                                "wait for it to finish (its checkpoint is shared)") from exc


def _run_locked(conn: psycopg.Connection, backfill: Backfill, options: Options, *, log: Log, restart: bool,
                dry_run: bool, run_id: str) -> Result:
    started = time.monotonic()
    plan = backfill.prepare(conn)
    checkpoint = read_checkpoint(conn, plan.name)
    after = None if restart or checkpoint is None else checkpoint.last_key
    result = Result(name=plan.name, table=plan.qualified_table, status="dry_run" if dry_run else "running",
                    dry_run=dry_run, resumed_from_key=after, run_id=run_id)
    where = f"after key {after:,}" if after is not None else "from the start"

    if dry_run:
        result.would_change = count_pending(conn, plan, after)
        # rows_left runs the same count unless a backfill with a predicate resumes after a checkpoint
        same_count = after is None or plan.pending is None
        result.rows_left = result.would_change if same_count else rows_left(conn, plan, after)
        result.checkpoint_rows_done = checkpoint.rows_done if checkpoint else 0
        result.duration_s = time.monotonic() - started
        log.info(f"backfill {plan.name} (dry run): {_n(result.would_change)} rows of {plan.qualified_table} would "
                 f"change ({where}); {_n(result.rows_left)} need the change in the whole table. Nothing was changed.")
        return result

    if plan.undoable and (undoing := capture.unfinished_undo(conn, plan.name)) is not None:
        raise BackfillError(
            f"backfill {plan.name}: the undo of its run {undoing} has started and not finished; launch undo_backfill "
            f"again (backfill: {plan.name}, run_id: {undoing}) to finish it before running the backfill again")
    replicas = throttle.ReplicaWatch.from_environment()
    standbys = replicas.standbys(conn)  # refuses before anything changes when their lag cannot be read
    total = count_pending(conn, plan, after)
    if standbys:
        log.info(f"backfill {plan.name}: the primary streams to {len(standbys)} standby(s) "
                 f"({', '.join(s.name for s in standbys)}); batches wait while one replays more than "
                 f"{replicas.max_lag_s:g} s behind ({throttle.MAX_REPLICA_LAG_ENV})")
    log.info(f"backfill {plan.name} on {plan.qualified_table}: {_n(total)} {plan.unit} to change, {where}"
             + (" (restart)" if restart else "") + f"; batch size {options.batch_size:,}, "
             f"target {options.target_batch_ms or '-'} ms, sleep {options.sleep_seconds}s")
    run_ref = _start_checkpoint(conn, plan, options, restart=restart, run_id=run_id)
    recorder = capture.Capture.start(conn, plan, run_ref) if run_ref is not None else None
    if recorder is not None:
        log.info(f"backfill {plan.name}: keeps for undo the {recorder.description}")
    sizer = BatchSizer(options)
    progress = _Progress(plan.name, total, options.progress_every_seconds, log, plan.unit)
    waiter = throttle.Waiter(options, plan.name, log, replicas)
    consecutive_failures = 0
    try:
        while True:
            waiter.wait(conn)
            result.paused_s, result.replica_paused_s = waiter.paused_s, waiter.replica_paused_s
            if time.monotonic() - started > options.max_runtime_seconds:
                result.status = "stopped"
                log.info(f"backfill {plan.name}: stopped after {duration(time.monotonic() - started)} "
                         f"(max_runtime_seconds {options.max_runtime_seconds:g}); the next launch resumes after key {after}")
                break
            batch_started = time.perf_counter()
            try:
                rows, last, changed, blocked = _run_batch(conn, plan, options, after=after, size=sizer.size, run_id=run_id,
                                                 recorder=recorder)
            except RETRYABLE as exc:
                consecutive_failures += 1
                result.retries += 1
                if consecutive_failures > options.max_retries:
                    raise BackfillError(
                        f"backfill {plan.name}: batch after key {after} failed {consecutive_failures} times in a row "
                        f"(last: {exc.diag.message_primary}); stopped, the checkpoint keeps the place") from exc
                sizer.shrink()
                log.warning(f"backfill {plan.name}: batch rolled back ({exc.diag.message_primary}); "
                            f"retrying with {sizer.size:,} rows")
                time.sleep(min(0.2 * 2 ** consecutive_failures, 5.0))
                continue
            elapsed_ms = (time.perf_counter() - batch_started) * 1000
            consecutive_failures = 0
            if not rows:
                break
            after = last
            result.last_key = after
            result.batches += 1
            result.rows_scanned += rows
            result.rows_changed += changed
            result.batch_ms.append(elapsed_ms)
            sizer.record(rows, elapsed_ms, blocked=blocked)
            sizer.blocked(blocked)
            if blocked:
                result.batches_that_blocked += 1
                result.bystanders_waited += blocked
                log.info(f"backfill {plan.name}: {blocked} other session(s) waited on the batch ending at key {last}; "
                         f"next batch {sizer.size:,} rows, pause {options.sleep_seconds + sizer.extra_pause:.2f} s")
            progress.maybe_log(result, sizer.size)
            if options.max_batches is not None and result.batches >= options.max_batches:
                result.status = "stopped"
                break
            if options.sleep_seconds or sizer.extra_pause:
                time.sleep(options.sleep_seconds + sizer.extra_pause)
    except BaseException as exc:  # killed by Dagster, a bug, a batch that cannot pass: keep the place
        try:
            _finish_checkpoint(conn, plan.name, "failed", error=errors.safe_message(exc)[:2000])
        except Exception:  # noqa: BLE001 - the original error is what matters
            pass
        raise

    if result.status != "stopped":
        result.status = "completed"
        _finish_checkpoint(conn, plan.name, "completed")
    result.final_batch_size = sizer.size
    result.duration_s = time.monotonic() - started
    result.rows_left = rows_left(conn, plan, after)
    final = read_checkpoint(conn, plan.name)
    result.checkpoint_rows_done = final.rows_done if final else 0
    log.info(_summary(result))
    if recorder is not None and result.rows_changed:
        log.info(f"backfill {plan.name}: the previous values of the {result.rows_changed:,} rows changed are kept; to "
                 f"put them back, launch undo_backfill with backfill: {plan.name}, run_id: {run_id}")
    if result.status == "completed" and plan.pending is not None and result.rows_left:
        log.warning(f"backfill {plan.name}: {result.rows_left:,} rows before the checkpoint still need the change "
                    "(changed while it ran, or since an earlier pass); launch it with restart: true to sweep them")
    return result


def _n(value: int | None) -> str:
    return "an unknown number of" if value is None else f"{value:,}"


def _summary(result: Result) -> str:
    return (f"backfill {result.name} {result.status}: {result.rows_changed:,} rows changed in {result.batches:,} batches, "
            f"{result.duration_s:.1f}s ({result.rows_per_second:,.0f} rows/s); batch p50 "
            f"{result.batch_ms_percentile(50):.0f} ms, p99 {result.batch_ms_percentile(99):.0f} ms; "
            f"{_n(result.rows_left)} rows left; paused {result.paused_s:.1f}s ({result.replica_paused_s:.1f}s on replica "
            f"lag); {result.batches_that_blocked} batches made others wait; {result.retries} retries")
