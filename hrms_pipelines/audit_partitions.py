"""Monthly partitions of hrms.core_auditlog, kept ahead by a daily schedule (Pattern 5 of the playbook).

What exists is read from the catalogue (`pg_get_expr(relpartbound)`), never from table names. Each
missing month is created as a plain table with a CHECK constraint equal to its bounds and then
`ALTER TABLE ... ATTACH PARTITION`ed: attaching takes SHARE UPDATE EXCLUSIVE on the parent, so reads
and writes of the audit log go on, and the CHECK constraint lets PostgreSQL skip the validation
scan. (`CREATE TABLE ... PARTITION OF` would hold ACCESS EXCLUSIVE on the parent.) Each month is its
own short transaction under a lock timeout, retried a few times when the lock is not granted.

Rows that landed in the default partition for a month that gets its partition are moved into it in
the same transaction (PostgreSQL refuses to attach the month otherwise). The default partition is
kept; an asset check fails while it holds rows. Nothing is ever dropped. Detaching old months is
retention, so it is deployment configuration (HRMS_AUDIT_DETACH_AFTER_MONTHS, 0 = off), never run
config; a detach writes its audit row first, in the same transaction, and leaves the table in place.

The audit log is append-only (core/0003) and belongs to hrms_audit_owner, a role nobody logs in as
(core/0005, hrms_pipelines.audit_owner): the migrator attaches and detaches months only through that
owner's narrow SECURITY DEFINER functions, which do what is described above. Every new month gets the
TRUNCATE guard and loses UPDATE, DELETE and TRUNCATE for its owner, like the months before it.
"""

import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field, field_validator

from hrms_pipelines.retries import transient_retries
from hrms_pipelines import locks, settings
from hrms_pipelines.audit_owner import AUDIT_SCHEMA
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.migrations import bounds
from hrms_pipelines.resources import MIGRATOR, READER, HrmsDatabase, set_local_timeouts
from hrms_pipelines.errors import error_boundary

PARENT = "core_auditlog"
ASSET = "core_auditlog_partitions"
JOB = "audit_log_partitions"
DEFAULT_PARTITION_EMPTY = "audit_log_default_partition_empty"
MONTHS_AHEAD_COVERED = "audit_log_months_ahead_covered"
DEFAULT_MONTHS_AHEAD = 3
# Bounds of what a UI user may set (issue 17: every numeric knob has one, named when refused): two
# years of empty months at most; the retries, with waits doubling, stay within minutes.
MAX_MONTHS_AHEAD, MAX_ATTEMPTS, MAX_RETRY_WAIT_SECONDS = 24, 10, 60.0


class AuditPartitionsConfig(dg.Config):
    months_ahead: int = Field(default=DEFAULT_MONTHS_AHEAD, ge=0, le=MAX_MONTHS_AHEAD)
    """Partitions must exist for the current month and this many months after it."""
    lock_timeout: str = "2s"
    """How long one attach (or detach) may wait for its lock before it is retried."""
    attempts: int = Field(default=5, ge=1, le=MAX_ATTEMPTS)
    """Tries per month when the lock is not granted."""
    retry_wait_seconds: float = Field(default=2.0, ge=0, le=MAX_RETRY_WAIT_SECONDS)
    """Wait before the 2nd try; doubles each time."""
    move_default_rows: bool = True
    """Move rows of a new month out of the default partition into it (one transaction); when false,
    such a month is reported and skipped."""
    dry_run: bool = False
    """Report which months would be created (and, with retention configured, detached); change nothing."""
    today: str = ""
    """Dry runs only: the date to count months from (YYYY-MM-DD), to preview a later month's run.
    A real run always counts from today in the database's time zone."""

    @field_validator("lock_timeout")
    @classmethod
    def _bounded_lock_timeout(cls, value: str) -> str:
        bounds.LOCK_TIMEOUT.check(value)  # while an attach waits, every writer of the audit log queues behind it
        return value


@dataclass(frozen=True)
class RangePartition:
    name: str
    lower: datetime | None
    """None = MINVALUE."""
    upper: datetime | None
    """None = MAXVALUE."""

    def covers(self, start: datetime, end: datetime) -> bool:
        return (self.lower is None or self.lower <= start) and (self.upper is None or self.upper >= end)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return (self.lower is None or self.lower < end) and (self.upper is None or self.upper > start)


@dataclass
class Layout:
    ranges: list[RangePartition]
    default: str | None
    timezone: str


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    moved_rows: dict[str, int] = field(default_factory=dict)
    already_covered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class PartitionMaintenanceError(Exception):
    pass


_BOUND = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$", re.S)


def read_layout(conn: psycopg.Connection) -> Layout:
    """The parent's partitions and their bounds, from pg_catalog."""
    rows = conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = format('%%I.%%I', %s::text, %s::text)::regclass
        """,
        [settings.HR_SCHEMA, PARENT],
    ).fetchall()
    timezone = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    ranges, default = [], None
    for name, bound in rows:
        if bound == "DEFAULT":
            default = name
            continue
        match = _BOUND.match(bound)
        if not match:
            raise PartitionMaintenanceError(f"partition {name} has bounds this job does not understand: {bound}")
        lower, upper = (_bound_value(conn, text) for text in match.groups())
        ranges.append(RangePartition(name, lower, upper))
    ranges.sort(key=lambda r: (r.lower is not None, r.lower or datetime.min))
    return Layout(ranges, default, timezone)


def _bound_value(conn: psycopg.Connection, text: str) -> datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return conn.execute(sql.SQL("SELECT {}::timestamptz").format(sql.SQL(text))).fetchone()[0]


def month_start(conn: psycopg.Connection, day: date, offset: int = 0) -> datetime:
    """Midnight of the first day of the month `offset` months from `day`'s, in the session's time
    zone: the same arithmetic the initial migration used for the first partitions."""
    return conn.execute(
        "SELECT (date_trunc('month', %s::date) + make_interval(months => %s))::timestamp::timestamptz",
        [day, offset],
    ).fetchone()[0]


def partition_name(start: datetime) -> str:
    return f"{PARENT}_y{start:%Y}m{start:%m}"


def _attach_month(
    conn: psycopg.Connection, layout: Layout, start: datetime, end: datetime, config: AuditPartitionsConfig,
) -> int:
    """Create and attach one month in one transaction, through hrms_audit.core_auditlog_attach_month
    (the audit log's owner does it; the migrator may not). Returns how many rows came from the default."""
    name = partition_name(start)
    with conn.transaction():
        set_local_timeouts(conn, lock_timeout=config.lock_timeout, statement_timeout="5min")
        if conn.execute("SELECT to_regclass(%s)", [f"{settings.HR_SCHEMA}.{name}"]).fetchone()[0] is not None:
            raise PartitionMaintenanceError(
                f"a table {settings.HR_SCHEMA}.{name} exists but is not the partition of {start:%Y-%m}; "
                "rename it (or attach it yourself) and run again"
            )
        if layout.default and not config.move_default_rows:
            in_month = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE tableoid = %s::regclass AND created_at >= %s AND created_at < %s")
                .format(sql.Identifier(settings.HR_SCHEMA, PARENT)),
                [f"{settings.HR_SCHEMA}.{layout.default}", start, end],
            ).fetchone()[0]
            if in_month:
                raise PartitionMaintenanceError(
                    f"{in_month} row(s) of {start:%Y-%m} are in the default partition {layout.default}; the month was "
                    "skipped (move_default_rows is off)"
                )
        try:
            return conn.execute(f"SELECT {AUDIT_SCHEMA}.core_auditlog_attach_month(%s, %s, %s)",
                                [start, end, config.move_default_rows]).fetchone()[0]
        except (psycopg.errors.DuplicateTable, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
            raise PartitionMaintenanceError(exc.diag.message_primary or str(exc)) from None


def _detach(conn: psycopg.Connection, partition: RangePartition, config: AuditPartitionsConfig, run_id: str | None,
            months: int) -> None:
    """hrms_audit.core_auditlog_detach_month: the audit row first, then the detach, one transaction."""
    with conn.transaction():
        set_local_timeouts(conn, lock_timeout=config.lock_timeout)
        conn.execute(f"SELECT {AUDIT_SCHEMA}.core_auditlog_detach_month(%s, %s, %s)", [partition.name, run_id, months])


def _with_retries(action, *, config: AuditPartitionsConfig, what: str, log):
    """`action()`'s result, retried while the lock is not granted within lock_timeout."""
    wait = config.retry_wait_seconds
    for attempt in range(1, max(config.attempts, 1) + 1):
        try:
            return action()
        except psycopg.errors.LockNotAvailable:
            if attempt >= config.attempts:
                raise PartitionMaintenanceError(
                    f"{what}: the lock was not granted within lock_timeout {config.lock_timeout} in "
                    f"{config.attempts} attempt(s); a long transaction holds {settings.HR_SCHEMA}.{PARENT}, try later"
                ) from None
            log(f"{what}: lock not granted within {config.lock_timeout} (attempt {attempt}/{config.attempts}); "
                f"retrying in {wait:g}s")
            time.sleep(wait)
            wait *= 2


def database_today(conn: psycopg.Connection) -> date:
    """Today in the database's time zone: what every real run counts months from."""
    return conn.execute("SELECT current_date").fetchone()[0]


def maintain(conn: psycopg.Connection, config: AuditPartitionsConfig, *, log=print, run_id: str | None = None,
             detach_after_months: int = 0, today: date | None = None) -> Outcome:
    """Ensure the months ahead exist (and detach old ones under the deployment's retention).
    `conn` is in autocommit mode. A dry run reports what it would do and changes nothing.
    `today` (a preview of another day) is for dry runs; the job passes it only then."""
    outcome = Outcome()
    layout = read_layout(conn)
    today = today or database_today(conn)
    for offset in range(0, config.months_ahead + 1):
        start, end = month_start(conn, today, offset), month_start(conn, today, offset + 1)
        label = f"{start:%Y-%m}"
        if any(r.covers(start, end) for r in layout.ranges):
            outcome.already_covered.append(label)
            continue
        clashing = [r.name for r in layout.ranges if r.overlaps(start, end)]
        if clashing:
            outcome.skipped.append(label)
            outcome.problems.append(f"{label}: partly covered by {', '.join(clashing)}; not a whole month, left alone")
            continue
        if config.dry_run:
            outcome.created.append(partition_name(start))
            log(f"dry run: would attach {partition_name(start)} for [{start:%Y-%m-%d}, {end:%Y-%m-%d})")
            continue
        try:
            moved = _with_retries(lambda: _attach_month(conn, layout, start, end, config),
                                  config=config, what=f"attach {label}", log=log)
        except PartitionMaintenanceError as exc:
            outcome.skipped.append(label)
            outcome.problems.append(str(exc))
            continue
        outcome.created.append(partition_name(start))
        if moved:
            outcome.moved_rows[partition_name(start)] = moved
        log(f"attached {partition_name(start)} for [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
            + (f", moved {moved} row(s) from the default partition" if moved else ""))
        layout = read_layout(conn)

    if detach_after_months > 0:
        cutoff = month_start(conn, today, -detach_after_months)
        for partition in layout.ranges:
            if partition.upper is not None and partition.upper <= cutoff:
                if config.dry_run:
                    outcome.detached.append(partition.name)
                    log(f"dry run: would detach {partition.name} (ended {partition.upper:%Y-%m-%d})")
                    continue
                try:
                    _with_retries(lambda p=partition: _detach(conn, p, config, run_id, detach_after_months), config=config,
                                  what=f"detach {partition.name}", log=log)
                except PartitionMaintenanceError as exc:
                    outcome.problems.append(str(exc))
                    continue
                outcome.detached.append(partition.name)
                log(f"detached {partition.name} (ended {partition.upper:%Y-%m-%d}); the table is kept")
    return outcome


def default_partition_rows(conn: psycopg.Connection) -> tuple[str | None, list[tuple[str, int]]]:
    """(default partition name, [(month, rows)]) of the rows in the default partition."""
    layout = read_layout(conn)
    if layout.default is None:
        return None, []
    rows = conn.execute(sql.SQL(
        "SELECT to_char(date_trunc('month', created_at), 'YYYY-MM'), count(*) FROM {} GROUP BY 1 ORDER BY 1"
    ).format(sql.Identifier(settings.HR_SCHEMA, layout.default))).fetchall()
    return layout.default, [(month, count) for month, count in rows]


def layout_table(layout: Layout) -> str:
    def fmt(value: datetime | None, edge: str) -> str:
        return edge if value is None else f"{value:%Y-%m-%d %H:%M %Z}"

    rows = [[r.name, fmt(r.lower, "MINVALUE"), fmt(r.upper, "MAXVALUE")] for r in layout.ranges]
    if layout.default:
        rows.append([layout.default, "DEFAULT", ""])
    return markdown_table(["partition", "from", "to"], rows)


@dg.asset(
    name=ASSET,
    group_name="operations",
    owners=["team:platform"],
    pool=settings.WRITER_POOL,
    kinds={"postgres"},
    description=(
        "The monthly partitions of hrms.core_auditlog: the current month and `months_ahead` after it "
        "always exist (attached without an ACCESS EXCLUSIVE lock on the audit log); never dropped."
    ),
)
@transient_retries
def core_auditlog_partitions(
    context: dg.AssetExecutionContext, config: AuditPartitionsConfig, hrms_db: HrmsDatabase
) -> dg.MaterializeResult:
    if config.months_ahead < 0 or config.attempts < 1:
        raise dg.Failure("months_ahead must be >= 0, attempts >= 1")
    if config.today and not config.dry_run:
        raise dg.Failure("`today` is for dry runs only (dry_run: true): a real run counts months from the database's today")
    try:
        detach_after = settings.audit_detach_after_months()
        preview_day = date.fromisoformat(config.today) if config.today else None
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        try:
            with locks.session_lock(conn, locks.AUDIT_PARTITIONS):
                outcome = maintain(conn, config, log=context.log.info, run_id=context.run.run_id,
                                   detach_after_months=detach_after, today=preview_day)
                layout = read_layout(conn)
        except (locks.LockNotAvailable, PartitionMaintenanceError) as exc:
            raise dg.Failure(str(exc)) from None
    metadata = {
        "dry_run": config.dry_run,
        "created": len(outcome.created),
        "created_partitions": ", ".join(outcome.created) or "none",
        "moved_from_default": sum(outcome.moved_rows.values()),
        "already_covered": len(outcome.already_covered),
        "detached": ", ".join(outcome.detached) or "none",
        "partitions": dg.MetadataValue.md(layout_table(layout)),
        "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in outcome.problems) or "none"),
    }
    if outcome.problems:
        raise dg.Failure("some months could not be prepared:\n" + "\n".join(outcome.problems), metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=ASSET, name=DEFAULT_PARTITION_EMPTY,
                description="No audit-log row sits in the default partition (every row has its month).")
@error_boundary
def audit_log_default_partition_empty(hrms_db: HrmsDatabase) -> dg.AssetCheckResult:
    with hrms_db.connection(READER, autocommit=True) as conn:
        default, months = default_partition_rows(conn)
    total = sum(count for _, count in months)
    metadata = {"default_partition": default or "none", "rows": total}
    if months:
        metadata["rows_by_month"] = dg.MetadataValue.md(markdown_table(["month", "rows"], months))
    return dg.AssetCheckResult(
        passed=total == 0,
        metadata=metadata,
        description=None if total == 0 else (
            f"{total} row(s) in {default}: run {JOB} with months_ahead reaching their months "
            "(it moves them into their partitions), or look for wrong created_at values"
        ),
    )


@dg.asset_check(asset=ASSET, name=MONTHS_AHEAD_COVERED,
                description=f"Partitions exist for the current month and the {DEFAULT_MONTHS_AHEAD} months after it.")
@error_boundary
def audit_log_months_ahead_covered(hrms_db: HrmsDatabase) -> dg.AssetCheckResult:
    with hrms_db.connection(READER, autocommit=True) as conn:
        layout = read_layout(conn)
        today = conn.execute("SELECT current_date").fetchone()[0]
        missing = []
        for offset in range(DEFAULT_MONTHS_AHEAD + 1):
            start, end = month_start(conn, today, offset), month_start(conn, today, offset + 1)
            if not any(r.covers(start, end) for r in layout.ranges):
                missing.append(f"{start:%Y-%m}")
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={"missing_months": ", ".join(missing) or "none", "partitions": len(layout.ranges)},
    )


audit_log_partitions = dg.define_asset_job(
    JOB,
    selection=dg.AssetSelection.assets(ASSET),
    description="Keep monthly partitions of hrms.core_auditlog ahead; report rows in the default partition.",
    tags={"hrms/kind": "maintenance"},
)

audit_log_partitions_daily = dg.ScheduleDefinition(
    name="audit_log_partitions_daily",
    job=audit_log_partitions,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    description="Daily: the next months' audit-log partitions exist long before the first row needs them.",
    # Harmless and needed: without it, rows would start landing in the default partition in 3 months.
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
