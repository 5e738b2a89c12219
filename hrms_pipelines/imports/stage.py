"""What every import stage shares: one transaction as the import role under the imports lock,
import records, unchanged-file detection, the append-aware path, rejects, change capture for undo,
in-transaction validation of what the stage touched, dry run with a preview, progress, and a failed
import record for every failure."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from hrms_pipelines import locks, privacy, settings
from hrms_pipelines.imports import appends, changes, linehash, preview, records, validations
from hrms_pipelines.imports.merge import Merge, merge, sql_rejects, temp_table
from hrms_pipelines.imports.options import ImportOptions, rejects_dir
from hrms_pipelines.imports.progress import Progress, ticking
from hrms_pipelines.imports.reader import FileInfo, ImportFileError, RejectReport, inspect_file
from hrms_pipelines.resources import IMPORTER, READER, HrmsDatabase

COUNT_KEYS = ("rows_read", "inserted", "updated", "unchanged", "skipped", "rejected")
__all__ = ["Merge", "merge", "sql_rejects", "temp_table", "Stage", "StageContext", "StageResult", "StageFailed",
           "StageLog", "execute", "run", "dry_run", "zero", "add"]


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
    path: str = "full"                # full, or appended (only the new tail was read)
    file_rows: int | None = None      # data rows of the whole file
    appended_to: int | None = None    # appended: the import record of the file it extends
    known_lines: int = 0              # lines skipped as known (linehash.py), counted unchanged


@dataclass
class ValidationResult:
    name: str
    blocking: bool
    count: int
    headers: tuple[str, ...]
    rows: list                        # masked
    scope: str = ""


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
    captured: changes.Captured | None = None
    preview: list[preview.TablePreview] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)             # seconds per phase
    warnings: list[str] = field(default_factory=list)                  # masked; also in the metadata

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
    tails: dict[str, appends.Tail] = field(default_factory=dict)  # file name -> the appended tail to read
    stage: Stage | None = None
    lines: dict[str, linehash.Lines] = field(default_factory=dict)   # file name -> its line pass (linehash.py)
    unwritten: dict[str, str] = field(default_factory=dict)          # file name -> SQL: row numbers left unwritten
    full_lines: set[str] = field(default_factory=set)                # files whose known lines may not be skipped
    _last: float = field(default_factory=time.perf_counter)

    def file_result(self, name: str) -> FileResult:
        return next(f for f in self.result.files if f.name == name)

    def audit_source(self) -> str:
        return f"import:{self.result.stage}"

    def fail_if_rejected(self, what: str) -> None:
        if self.rejects.count:
            raise ImportFileError(self.rejects.message(what), self.rejects)

    def lap(self, phase: str, what: str | None = None) -> None:
        """The end of a phase: its seconds go to the metadata (summed per phase) and, with `what`, to the log."""
        now = time.perf_counter()
        seconds = now - self._last
        self._last = now
        self.result.phases[phase] = self.result.phases.get(phase, 0.0) + seconds
        if what:
            self.log.info(f"{what}: {seconds:.2f}s")

    def warn(self, message: str) -> None:
        """A warning of the run (masked by the caller): in the log and in the stage's metadata."""
        self.result.warnings.append(message)
        self.log.warning(message)

    def load(self, info: FileInfo, table: str, model, *, prepare=None) -> int:
        """Validate and stage a file -- or only its appended tail (hrms_pipelines.imports.appends), or
        only its lines not known (hrms_pipelines.imports.linehash) -- logging progress every few
        seconds. Returns the rows staged."""
        from hrms_pipelines.imports import reader

        tail = self.tails.get(info.name)
        spec = self.stage.line_keys if self.stage is not None else None
        lines, spool = None, None
        if spec is not None:
            where = {"start_offset": tail.offset, "first_row_number": tail.first_row_number} if tail else {}
            lines, spool = linehash.scan(self.conn, self.stage.name, info, self.stage.record_options(self.options),
                                         skip=not tail and info.name not in self.full_lines, **where)
            self.lines[info.name] = lines
            self.lap("known_lines", f"{info.name}: {lines.known:,} of {lines.total:,} lines known (hashed, looked up)"
                     if lines.hashed else None)
        if lines is not None and lines.known:
            what = f"{info.name} (the {lines.total - lines.known:,} lines not known)"
            progress = Progress(self.log.info, what, lines.total - lines.known)
            rows = linehash.load_unknown(self.conn, info, table, model, self.rejects, spool,
                                         prepare=ticking(progress, prepare), chunk_rows=self.options.chunk_rows)
        else:
            if spool is not None:
                spool.close()
            what = f"{info.name}" + (f" (the {tail.rows:,} rows appended after byte {tail.offset:,})" if tail else "")
            progress = Progress(self.log.info, what, tail.rows if tail else (info.rows or None))
            kwargs = {"start_offset": tail.offset, "first_row_number": tail.first_row_number} if tail else {}
            rows = reader.load_file(self.conn, info, table, model, self.rejects, prepare=ticking(progress, prepare),
                                    chunk_rows=self.options.chunk_rows, **kwargs)
        self.file_result(info.name).file_rows = info.rows or None
        self.file_result(info.name).known_lines = lines.known if lines is not None else 0
        self.lap("read_and_stage", f"{what}: {rows:,} rows staged, validated (Pandera) while COPY streamed them")
        if tail and not self.rejects.count and self.stage is not None and self.stage.append_guard is not None:
            reason = self.stage.append_guard(self, info, table)
            if reason:
                self.conn.execute(f'DROP TABLE "{table}"')
                appends.fall_back(self, info, reason)
                return self.load(info, table, model, prepare=prepare)
        if spec is not None and lines is not None and not self.rejects.count:
            linehash.stage_keys(self.conn, lines, table, spec.key(info))
            repeats = linehash.repeats_a_known_key(self.conn, lines)
            if repeats:
                self.conn.execute(f'DROP TABLE "{table}"')
                self.full_lines.add(info.name)
                self.log.info(f"{info.name}: full path after all: {repeats:,} key(s) of known lines repeat in the file "
                              "(the repeat is rejected on the full path)")
                return self.load(info, table, model, prepare=prepare)
        return rows


@dataclass(frozen=True)
class Stage:
    """One import stage: its files, the options that change its outcome, the tables it writes."""

    name: str
    tables: tuple[str, ...]
    files: Callable[[ImportOptions], list[Path]]
    record_options: Callable[[ImportOptions], dict]
    apply: Callable[[StageContext, list[FileInfo]], None]
    # Append-aware files (appends.py): given the staged tail of a file (ctx, info, staging table),
    # None when the tail alone may be merged, else why not (the file then takes the full path).
    # No guard: the stage's files are always read whole.
    append_guard: Callable[[StageContext, FileInfo, str], str | None] | None = None
    # Known lines (linehash.py): the stage's natural key over a staging row and its counts' label.
    # None: the stage's CSV files are always read line by line.
    line_keys: linehash.LineKeys | None = None


def inspect(path: Path, stage: Stage, previous: dict[str, appends.Previous], options: dict) -> FileInfo:
    """The file as the stage needs it. A CSV file of the very size and sha256 the last successful
    import of its name had (same options) is only hashed -- one pass of sha256, no CSV scan: it is
    unchanged and will not be read. Any other file is inspected by the reader, with the prefix
    hash an append-aware stage asks for."""
    before = previous.get(path.name)
    if before is not None and before.options == options and path.suffix.lower() == ".csv":
        identity = records.file_identity(path, before.size)
        if identity is not None and identity == (before.sha256, before.size):
            return FileInfo(path=path, sha256=before.sha256, size=before.size, columns=[], file_sha256=before.sha256)
    sizes = appends.prefix_sizes(previous, stage)
    return inspect_file(path, prefix_size=sizes.get(path.name))


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
    # What the stage writes is recorded as known lines; anything else the import role writes (a
    # backfill, its undo) must make them unknown: imports/0004's trigger tells them apart by this.
    conn.execute(f"SELECT pg_catalog.set_config('{IMPORT_STAGE_SETTING}', 'on', true)")
    result = StageResult(stage=stage.name, dry_run=dry_run)
    rejects = RejectReport(rejects_dir(run_id) / f"{stage.name}.csv")
    result.rejects = rejects
    opts = stage.record_options(options)
    if infos is None:
        paths = stage.files(options)
        previous = appends.previous_imports(conn, stage.name, [p.name for p in paths])
        infos = [inspect(p, stage, previous, opts) for p in paths]
    todo = []
    for info in infos:
        previous = records.previous_success(conn, stage.name, info, opts)
        if previous is not None:
            log.info(f"{info.name}: unchanged since import record #{previous} (same sha256 {info.sha256[:12]} and options); nothing to do")
            result.files.append(FileResult(info.name, info.sha256, "unchanged", record_id=previous))
        else:
            todo.append(info)
    if todo:
        ctx = StageContext(conn, options, run_id, log, rejects, result, stage=stage)
        changes.begin(conn)
        for info in todo:
            ctx.record_ids[info.name] = records.start(conn, stage.name, info, opts, run_id)
            result.files.append(FileResult(info.name, info.sha256, "dry_run" if dry_run else "running",
                                           record_id=None if dry_run else ctx.record_ids[info.name]))
        appends.plan(ctx, stage, todo, opts)
        ctx.lap("prepare")
        stage.apply(ctx, todo)
        rejects.close()
        _known_lines(ctx, stage, dry_run)
        ctx.lap("write")
        result.captured = changes.flush(conn, list(ctx.record_ids.values()))
        ctx.lap("change_capture")
        if options.validate_after:
            run_validations(conn, stage.name, result, log)
            ctx.lap("validate")
        if dry_run:
            result.preview = preview.build(conn)
            ctx.lap("preview")
        for f in result.files:
            if f.outcome in ("running", "dry_run"):
                f.outcome = "dry_run" if dry_run else "succeeded"
                records.finish(conn, ctx.record_ids[f.name], "succeeded", f.counts, file_rows=f.file_rows,
                               appended_to=f.appended_to, message=appends.describe(f) if f.path == "appended" else
                               (f"{f.known_lines:,} known lines skipped (linehash)" if f.known_lines else None))
    result.seconds = time.perf_counter() - started
    counts = result.counts
    log.info(
        f"{'dry run: would have ' if dry_run else ''}read {counts['rows_read']} rows: inserted {counts['inserted']}, "
        f"updated {counts['updated']}, unchanged {counts['unchanged']}, skipped {counts['skipped']}, "
        f"rejected {counts['rejected']} in {result.seconds:.2f}s"
        + (f"; change capture kept {result.captured.undo_bytes:,} bytes for undo" if result.captured else "")
    )
    return result


def _known_lines(ctx: StageContext, stage: Stage, dry_run: bool) -> None:
    """Known lines count as read and unchanged; every row the stage left equal to its line is remembered."""
    for name, lines in ctx.lines.items():
        file = ctx.file_result(name)
        if lines.known:
            file.counts["rows_read"] = file.counts.get("rows_read", 0) + lines.known
            file.counts["unchanged"] = file.counts.get("unchanged", 0) + lines.known
            entity = ctx.result.entities.get(stage.line_keys.entity) if stage.line_keys else None
            if entity is not None:
                entity["unchanged"] = entity.get("unchanged", 0) + lines.known
        if not dry_run:
            linehash.record(ctx.conn, lines, ctx.record_ids[name], ctx.unwritten.get(name))
    if ctx.lines:
        ctx.lap("known_lines")


# A stage that changed at least this many rows validates whole tables: checking every row costs no
# more than checking a change that large row by row, and hash joins over whole tables never fall into
# the nested loops stale statistics of just-written tables can lead the planner to.
WHOLE_TABLES_FROM = 20_000
# Set for the length of a stage's transaction (imports/0004's trigger reads it).
IMPORT_STAGE_SETTING = "hrms.import_stage"


def run_validations(conn: psycopg.Connection, stage: str, result: StageResult, log: StageLog) -> None:
    """The stage's validations over what it touched (and their direct relations), before commit."""
    changed = result.captured.rows if result.captured else 0
    if changed >= WHOLE_TABLES_FROM:
        scope, label = None, f"whole tables (this stage changed {changed:,} rows: as cheap as checking them one by one)"
    else:
        changes.analyze(conn)
        scope = validations.StageScope()
        label = scope.label
    failed = []
    for validation in validations.BY_STAGE.get(stage, []):
        count, rows = validation.offending(conn, scope=scope)
        shown = validation.masked(rows)
        result.validations.append(ValidationResult(validation.name, validation.blocking, count, validation.headers, shown,
                                                   label))
        if count and validation.blocking:
            failed.append(f"{validation.name}: {count} row(s), e.g. {[tuple(r) for r in shown[:3]]} ({validation.description})")
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
    """One stage as one transaction, as the import role, under the imports advisory lock.

    Whatever fails -- a file that cannot be read, a reject, a validation, the database, a bug -- the
    transaction rolls back and each file of the stage gets a `failed` import record saying why."""
    infos: list[FileInfo] = []
    unread: list[Path] = []
    try:
        paths = stage.files(options)
        with hrms_db.connection(READER) as conn:   # the files last imported: unchanged? appended to?
            previous = appends.previous_imports(conn, stage.name, [p.name for p in paths])
        opts = stage.record_options(options)
        for path in paths:
            try:
                infos.append(inspect(path, stage, previous, opts))
            except ImportFileError:
                unread.append(path)
                raise
        with hrms_db.transaction(IMPORTER, lock_timeout=options.lock_timeout, lock=imports_lock(run_id, log)) as conn:
            result = execute(conn, stage, options, run_id=run_id, log=log, infos=infos)
        return result
    except Exception as exc:
        _record_failure(hrms_db, stage, options, infos, unread, run_id, exc, log)
        raise


def _record_failure(hrms_db, stage: Stage, options: ImportOptions, infos: list[FileInfo], unread: list[Path], run_id,
                    exc: Exception, log: StageLog) -> None:
    """After the rollback, leave a 'failed' import record per file saying why (files that could not
    even be read too). A database error here is logged and told with the failure, never swallowed."""
    rejected = exc.rejects.count if isinstance(exc, ImportFileError) and exc.rejects else 0
    message = records.storable(str(exc) or type(exc).__name__)
    try:
        with hrms_db.transaction(IMPORTER) as conn:
            opts = stage.record_options(options)
            for info in infos:
                records.record_outcome(conn, stage.name, info, opts, run_id, "failed", {"rejected": rejected}, message)
            for path in unread:
                records.record_unread(conn, stage.name, path, opts, run_id, message)
    except Exception as error:  # noqa: BLE001 -- told, and attached to the failure being raised
        text = privacy.scrub_text(f"{type(error).__name__}: {error}")
        log.error(f"the failed import record could not be written ({text}); the run's failure below is the only record of it")
        exc.record_error = text  # type: ignore[attr-defined]


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
