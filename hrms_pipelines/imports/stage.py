"""What every import stage shares: one transaction as the import role under the imports lock,
import records, unchanged-file detection, rejects, in-transaction validation, dry run, and the
set-based merge of staged rows into a table (insert new, update real changes only, audit)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from hrms_pipelines import locks, privacy, settings
from hrms_pipelines.imports import records, validations
from hrms_pipelines.imports.options import ImportOptions, rejects_dir
from hrms_pipelines.imports.reader import FileInfo, ImportFileError, RejectReport, inspect_file
from hrms_pipelines.resources import IMPORTER, HrmsDatabase

COUNT_KEYS = ("rows_read", "inserted", "updated", "unchanged", "skipped", "rejected")


class StageFailed(Exception):
    """A stage that changed nothing: bad input or a failing blocking validation."""

    def __init__(self, message: str, result: StageResult | None = None):
        super().__init__(message)
        self.result = result


class _DryRunRollback(Exception):
    pass


def zero() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
    return total


@dataclass
class FileResult:
    name: str
    sha256: str
    outcome: str                      # succeeded, unchanged, failed, dry_run
    counts: dict[str, int] = field(default_factory=zero)
    record_id: int | None = None
    kind: str | None = None           # org files: organizations, teams, ...


@dataclass
class ValidationResult:
    name: str
    blocking: bool
    count: int
    headers: tuple[str, ...]
    rows: list[tuple]


@dataclass
class StageResult:
    stage: str
    dry_run: bool = False
    files: list[FileResult] = field(default_factory=list)
    entities: dict[str, dict[str, int]] = field(default_factory=dict)   # per table
    validations: list[ValidationResult] = field(default_factory=list)
    seconds: float = 0.0
    rejects: RejectReport | None = None
    message: str = ""

    @property
    def counts(self) -> dict[str, int]:
        total = zero()
        for f in self.files:
            add(total, f.counts)
        return total

    @property
    def unchanged(self) -> bool:
        return bool(self.files) and all(f.outcome == "unchanged" for f in self.files)

    @property
    def rows_per_second(self) -> float:
        return self.counts["rows_read"] / self.seconds if self.seconds else 0.0


class StageLog:
    """Dagster's logger plus the optional log file; every operation goes through here. Both get the
    same line, passed through privacy.scrub_text (a last line of defence: messages mask by column)."""

    def __init__(self, dagster_log=None, log_file: str = "", stage: str = ""):
        self.dagster_log = dagster_log
        self.stage = stage
        self.file_logger: logging.Logger | None = None
        if log_file:
            self.file_logger = _file_logger(log_file)

    def _emit(self, level: str, message: str) -> None:
        text = privacy.scrub_text(f"[{self.stage}] {message}" if self.stage else message)
        if self.dagster_log is not None:
            getattr(self.dagster_log, level)(text)
        if self.file_logger is not None:
            getattr(self.file_logger, level)(text)

    def info(self, message: str) -> None:
        self._emit("info", message)

    def laps(self) -> Callable[[str], None]:
        """`lap = log.laps(); ...; lap("did X")` logs the seconds since the previous lap."""
        last = [time.perf_counter()]

        def lap(what: str) -> None:
            now = time.perf_counter()
            self.info(f"{what}: {now - last[0]:.2f}s")
            last[0] = now

        return lap

    def warning(self, message: str) -> None:
        self._emit("warning", message)

    def error(self, message: str) -> None:
        self._emit("error", message)


def _file_logger(name: str) -> logging.Logger:
    """The optional log file: a plain name inside the logs folder (HRMS_LOGS_DIR), 0600 in a 0700
    folder, appended to, never through a symlink."""
    folder = settings.private_dir(settings.logs_dir())
    path = folder / settings.plain_name(name, "log_file")
    logger = logging.getLogger(f"hrms_import.file.{path}")
    if not logger.handlers:
        stream = io.TextIOWrapper(settings.create_private_file(path, append=True), encoding="utf-8", line_buffering=True)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


@dataclass
class StageContext:
    conn: psycopg.Connection
    options: ImportOptions
    run_id: str | None
    log: StageLog
    rejects: RejectReport
    result: StageResult
    record_ids: dict[str, int] = field(default_factory=dict)   # file name -> import record id

    def file_result(self, name: str) -> FileResult:
        return next(f for f in self.result.files if f.name == name)

    def audit_source(self) -> str:
        return f"import:{self.result.stage}"

    def fail_if_rejected(self, what: str) -> None:
        if self.rejects.count:
            raise ImportFileError(self.rejects.message(what), self.rejects)


@dataclass(frozen=True)
class Stage:
    """One import stage: its files, the options that change its outcome, the tables it writes."""

    name: str
    tables: tuple[str, ...]
    files: Callable[[ImportOptions], list[Path]]
    record_options: Callable[[ImportOptions], dict]
    apply: Callable[[StageContext, list[FileInfo]], None]


def execute(
    conn: psycopg.Connection,
    stage: Stage,
    options: ImportOptions,
    *,
    run_id: str | None,
    log: StageLog,
    infos: list[FileInfo] | None = None,
    dry_run: bool = False,
) -> StageResult:
    """Run a stage inside the caller's transaction (already as the import role, under the lock).

    Raises ImportFileError / StageFailed; the caller's transaction then rolls back.
    """
    started = time.perf_counter()
    result = StageResult(stage=stage.name, dry_run=dry_run)
    rejects = RejectReport(rejects_dir(run_id) / f"{stage.name}.csv")
    result.rejects = rejects
    if infos is None:
        infos = [inspect_file(p) for p in stage.files(options)]
    opts = stage.record_options(options)
    todo = []
    for info in infos:
        previous = records.previous_success(conn, stage.name, info, opts)
        if previous is not None:
            log.info(f"{info.name}: unchanged since import record #{previous} (same sha256 {info.sha256[:12]} and options); nothing to do")
            result.files.append(FileResult(info.name, info.sha256, "unchanged", record_id=previous))
        else:
            todo.append(info)
    if todo:
        ctx = StageContext(conn, options, run_id, log, rejects, result)
        for info in todo:
            ctx.record_ids[info.name] = records.start(conn, stage.name, info, opts, run_id)
            result.files.append(FileResult(info.name, info.sha256, "dry_run" if dry_run else "running",
                                           record_id=None if dry_run else ctx.record_ids[info.name]))
        stage.apply(ctx, todo)
        rejects.close()
        if options.validate_after:
            run_validations(conn, stage.name, result, log)
        for f in result.files:
            if f.outcome in ("running", "dry_run"):
                f.outcome = "dry_run" if dry_run else "succeeded"
                records.finish(conn, ctx.record_ids[f.name], "succeeded", f.counts)
    result.seconds = time.perf_counter() - started
    counts = result.counts
    log.info(
        f"{'dry run: would have ' if dry_run else ''}read {counts['rows_read']} rows: inserted {counts['inserted']}, "
        f"updated {counts['updated']}, unchanged {counts['unchanged']}, skipped {counts['skipped']}, "
        f"rejected {counts['rejected']} in {result.seconds:.2f}s"
    )
    return result


def run_validations(conn: psycopg.Connection, stage: str, result: StageResult, log: StageLog) -> None:
    failed = []
    for validation in validations.BY_STAGE.get(stage, []):
        count, rows = validation.offending(conn)
        result.validations.append(ValidationResult(validation.name, validation.blocking, count, validation.headers, rows))
        if count and validation.blocking:
            failed.append(f"{validation.name}: {count} row(s), e.g. {rows[:3]} ({validation.description})")
        elif count:
            log.warning(f"validation {validation.name}: {count} row(s) ({validation.description})")
    if failed:
        raise StageFailed(f"{stage}: blocking validation failed before commit; the stage was rolled back:\n  - "
                          + "\n  - ".join(failed), result)


def imports_lock(run_id: str | None, log: StageLog) -> locks.TransactionLock:
    """The `imports` lock of a stage's (or a dry run's) transaction: taken as its first statement,
    waited for up to HRMS_IMPORT_LOCK_WAIT when another import holds it (one started with
    `dagster job execute`, which bypasses the run queue), saying whom it waits for."""
    return locks.TransactionLock(locks.IMPORTS, settings.import_lock_wait(), log=log.info, run_id=run_id)


def run(
    hrms_db: HrmsDatabase,
    stage: Stage,
    options: ImportOptions,
    *,
    run_id: str | None,
    log: StageLog,
) -> StageResult:
    """One stage as one transaction, as the import role, under the imports advisory lock."""
    infos = [inspect_file(p) for p in stage.files(options)]
    try:
        with hrms_db.transaction(IMPORTER, lock_timeout=options.lock_timeout, lock=imports_lock(run_id, log)) as conn:
            result = execute(conn, stage, options, run_id=run_id, log=log, infos=infos)
        return result
    except (ImportFileError, StageFailed, psycopg.Error, locks.LockNotAvailable) as exc:
        _record_failure(hrms_db, stage, options, infos, run_id, exc)
        raise


def _record_failure(hrms_db, stage: Stage, options: ImportOptions, infos: list[FileInfo], run_id, exc: Exception) -> None:
    """After the rollback, leave a 'failed' import record per file saying why."""
    rejected = exc.rejects.count if isinstance(exc, ImportFileError) and exc.rejects else 0
    try:
        with hrms_db.transaction(IMPORTER) as conn:
            for info in infos:
                records.record_outcome(conn, stage.name, info, stage.record_options(options), run_id, "failed",
                                       {"rejected": rejected}, str(exc))
    except psycopg.Error:
        pass  # the database itself is the problem; the run's failure says so


def dry_run(
    hrms_db: HrmsDatabase,
    stages: Sequence[Stage],
    options: ImportOptions,
    *,
    run_id: str | None,
    log_for: Callable[[str], StageLog],
) -> list[StageResult]:
    """Every stage in one transaction, rolled back at the end: later stages see what earlier ones
    would have written. Stops at the first failing stage (its result carries the failure)."""
    results: list[StageResult] = []
    try:
        lock = imports_lock(run_id, log_for(stages[0].name) if stages else StageLog())
        with hrms_db.transaction(IMPORTER, lock_timeout=options.lock_timeout, lock=lock) as conn:
            for stage in stages:
                log = log_for(stage.name)
                try:
                    with conn.transaction():   # a savepoint: a failing stage leaves the earlier ones' rows visible
                        results.append(execute(conn, stage, options, run_id=run_id, log=log, dry_run=True))
                except (ImportFileError, StageFailed) as exc:
                    failed = getattr(exc, "result", None) or StageResult(stage=stage.name, dry_run=True)
                    failed.message = str(exc)
                    if isinstance(exc, ImportFileError):
                        failed.rejects = exc.rejects
                    results.append(failed)
                    log.error(f"dry run: the stage would fail:\n{exc}")
                    break
            raise _DryRunRollback()
    except _DryRunRollback:
        pass
    return results


# ---------------------------------------------------------------------------------------------
# Set-based merge of staged rows into a table


@dataclass(frozen=True)
class Merge:
    target: str                       # hrms.table
    key: tuple[str, ...]              # natural key (a unique constraint)
    columns: tuple[str, ...]          # value columns compared / updated
    source: str                       # a temp table holding key + columns (typed) + row_number + file
    label: str                        # for counts: "ladders", "teams", ...


def merge(ctx: StageContext, m: Merge, *, update: bool, record_id_sql: str) -> dict[str, int]:
    """Insert new keys; update existing rows whose values really differ (when `update`), auditing
    before/after; count the rest as unchanged (same values) or skipped (differs, no update flag).
    A blank cell never erases a stored value: it compares and updates as "keep what is there"."""
    conn = ctx.conn
    key_match = " AND ".join(f"t.{k} = s.{k}" for k in m.key)
    new_values = [f"coalesce(s.{c}, t.{c})" for c in m.columns]
    differs = f"({', '.join('t.' + c for c in m.columns)}) IS DISTINCT FROM ({', '.join(new_values)})" if m.columns else "false"
    total = conn.execute(f"SELECT count(*) FROM {m.source}").fetchone()[0]
    updated = skipped = 0
    if update and m.columns:
        before = "jsonb_build_object(" + ", ".join(f"'{c}', t.{c}" for c in m.columns) + ")"
        after = "jsonb_build_object(" + ", ".join(f"'{c}', u.{c}" for c in m.columns) + ")"
        row_key = " || '/' || ".join(f"u.{k}::text" for k in m.key)
        cur = conn.execute(
            f"""
            WITH changed AS (
                SELECT t.id, {before} AS before FROM {m.target} t JOIN {m.source} s ON {key_match} WHERE {differs}
            ), upd AS (
                UPDATE {m.target} t SET {', '.join(f'{c} = {v}' for c, v in zip(m.columns, new_values))}, updated_at = now()
                FROM {m.source} s WHERE {key_match} AND t.id IN (SELECT id FROM changed)
                RETURNING t.*
            )
            INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after, import_record_id)
            SELECT %s, %s, 'update', %s, {row_key}, c.before, {after}, {record_id_sql}
            FROM upd u JOIN changed c ON c.id = u.id
            """,
            [ctx.run_id, ctx.audit_source(), m.target.split(".", 1)[1]],
        )
        updated = cur.rowcount
    elif m.columns:
        skipped = conn.execute(f"SELECT count(*) FROM {m.target} t JOIN {m.source} s ON {key_match} WHERE {differs}").fetchone()[0]
    insert_cols = list(m.key) + list(m.columns)
    inserted = conn.execute(
        f"INSERT INTO {m.target} ({', '.join(insert_cols)}, import_record_id) "
        f"SELECT {', '.join('s.' + c for c in insert_cols)}, {record_id_sql} FROM {m.source} s "
        f"ON CONFLICT ({', '.join(m.key)}) DO NOTHING"
    ).rowcount
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


def sql_rejects(ctx: StageContext, file: str, query: str, params: Sequence | None = None) -> int:
    """Add the rows of `query` (row_number, column, value, rule) as rejects of `file`; returns how many."""
    from hrms_pipelines.imports.reader import Reject

    rows = ctx.conn.execute(query, params).fetchall()
    for row_number, column, value, rule in rows:
        ctx.rejects.add(Reject(file, int(row_number) + 1 if row_number is not None else None, column, value, rule))
    return len(rows)
