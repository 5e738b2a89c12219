"""Running a migration file's statements the way the runner does: in the file's transaction, or
statement by statement with the timeouts set again before each one; errors that name the file, the
line and the table waited on; concurrent index builds that converge (hrms_pipelines.migrations.concurrent);
and an Observer hook through which trace mode watches every statement."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from pglast import ast, parse_sql
from pglast.visitors import Visitor

from hrms_pipelines.migrations import bounds, concurrent
from hrms_pipelines.migrations.files import Migration, MigrationError, MigrationFile, Statement

DEFAULT_LOCK_TIMEOUT = "10s"
DEFAULT_STATEMENT_TIMEOUT = "30s"


@dataclass
class Timeouts:
    """The runner's lock and statement timeouts, each within its bound (migrations.bounds)."""

    lock_timeout: str = DEFAULT_LOCK_TIMEOUT
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT

    def __post_init__(self) -> None:
        bounds.LOCK_TIMEOUT.check(self.lock_timeout)
        bounds.STATEMENT_TIMEOUT.check(self.statement_timeout)


class _RelationNames(Visitor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def visit_RangeVar(self, ancestors, node: ast.RangeVar) -> None:  # noqa: N802 (pglast's naming)
        name = f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname
        if name not in self.names:
            self.names.append(name)


def relations_of(statement_sql: str) -> list[str]:
    try:
        visitor = _RelationNames()
        visitor(parse_sql(statement_sql))
        return visitor.names
    except Exception:  # noqa: BLE001 - naming tables is a courtesy, never a new failure
        return []


def _describe_error(exc: psycopg.Error, migration_file, statement: Statement, timeouts: Timeouts) -> str:
    diag = exc.diag
    line = statement.line
    position = diag.statement_position
    if position and position.isdigit():
        line += statement.sql.count("\n", 0, int(position) - 1)
    message = diag.message_primary or str(exc).strip()
    tables = relations_of(statement.sql)
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        message += f" (lock_timeout {timeouts.lock_timeout}"
        message += f"; waiting for a lock on {', '.join(tables)})" if tables else ")"
        message += ". Another session holds a conflicting lock: retry when it is gone, or raise lock_timeout."
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        message += f" (statement_timeout {timeouts.statement_timeout}"
        message += f"; on {', '.join(tables)})" if tables else ")"
        message += ". Split the work (batched backfill, CONCURRENTLY) or raise statement_timeout for this run."
    parts = [f"{migration_file.path}:{line}: {message}"]
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"HINT: {diag.message_hint}")
    first_line = statement.sql.strip().splitlines()[0] if statement.sql.strip() else ""
    parts.append(f"statement: {first_line[:200]}")
    return "\n".join(parts)


TRANSACTION_CONTROL = re.compile(r"^(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT)\b", re.IGNORECASE)


class Observer:
    """Watches the runner run each statement (trace mode rehearses migrations through one). The
    default runs the statement and watches nothing."""

    def migration(self, migration: Migration, direction: str) -> None:
        """A migration's file (`up` or `down`) is about to run."""

    def statement(self, conn: psycopg.Connection, file: MigrationFile, statement: Statement, run, *,
                  transactional: bool) -> None:
        """Run the statement (`run()`); `transactional`: inside the file's transaction."""
        run()


PLAIN = Observer()


def execute_file(conn: psycopg.Connection, migration_file: MigrationFile, timeouts: Timeouts, *, transactional: bool,
                  observer: Observer = PLAIN, log=print) -> None:
    statements = migration_file.statements()  # parse the whole file before running any of it
    if transactional:
        for statement in statements:
            if TRANSACTION_CONTROL.match(statement.sql.lstrip()):
                raise MigrationError(
                    f"{migration_file.path}:{statement.line}: explicit transaction control "
                    f"({statement.sql.split()[0].upper()}) in a transactional migration: the runner already runs "
                    "each migration in its own transaction. Remove it, or mark the file "
                    "`-- hrms:non-transactional` if it must manage transactions itself."
                )
    builds: list[concurrent.IndexBuild] = []
    reindexes: list[concurrent.Reindex] = []
    for statement in statements:
        build = concurrent.index_build(statement)
        if build is not None:
            builds.append(build)
        target = concurrent.reindex(statement) if not transactional else None
        if target is not None:
            reindexes.append(target)

        def run(statement=statement) -> None:
            if not transactional:
                set_session_timeouts(conn, timeouts)
            conn.execute(statement.sql, prepare=False)

        try:
            if build is not None and build.concurrent and not transactional:
                build_concurrently(conn, migration_file, statement, build, run, observer, log, timeouts)
            elif target is not None:
                set_session_timeouts(conn, timeouts)
                concurrent.drop_reindex_leftovers(conn, target, log)
                observer.statement(conn, migration_file, statement, run, transactional=False)
            else:
                observer.statement(conn, migration_file, statement, run, transactional=transactional)
        except psycopg.Error as exc:
            message = _describe_error(exc, migration_file, statement, timeouts)
            if build is not None and build.concurrent and not transactional:
                message += _clean_up_after_failed_build(conn, build, log)
            elif target is not None:
                message += _clean_up_after_failed_reindex(conn, target, log)
            raise MigrationError(message) from exc
    if not transactional and (invalid := concurrent.invalid_among(conn, builds)):
        raise MigrationError(
            f"{migration_file.path}: INVALID index(es) {', '.join(invalid)} after the file ran: a concurrent build did "
            "not finish. The ledger row is not written; run the migration again (the runner drops an INVALID "
            "index of the file and builds it again).")
    if leftovers := [name for target in reindexes for name in concurrent.reindex_leftovers(conn, target)]:
        raise MigrationError(
            f"{migration_file.path}: INVALID index(es) {', '.join(leftovers)} after the file ran: a REINDEX CONCURRENTLY "
            "did not finish. The ledger row is not written; run the migration again (the runner drops them and "
            "reindexes again).")


def build_concurrently(conn, migration_file, statement, build, run, observer, log, timeouts) -> None:
    """CREATE INDEX CONCURRENTLY that converges: an INVALID index of that name (left by an interrupted
    attempt) is dropped first, and if the statement itself leaves one (IF NOT EXISTS met one made in
    between), it is dropped and built again."""
    for attempt in range(concurrent.BUILD_ATTEMPTS):
        set_session_timeouts(conn, timeouts)
        concurrent.drop_invalid(conn, build, log)
        observer.statement(conn, migration_file, statement, run, transactional=False)
        found = concurrent.state(conn, build)
        if found is None or found[1]:
            return
        log(f"{migration_file.path}:{statement.line}: index {found[0]} is INVALID after the build "
            f"(attempt {attempt + 1} of {concurrent.BUILD_ATTEMPTS})")


def _clean_up_after_failed_build(conn: psycopg.Connection, build: concurrent.IndexBuild, log) -> str:
    """After a failed concurrent build on a live connection, drop the INVALID index it left (an
    INVALID unique index still refuses duplicates on every write). Best effort: the next run does it
    otherwise."""
    if conn.closed:
        return f"\nThe connection was lost: the next run drops the INVALID index {build.name} it may have left and builds it again."
    try:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        dropped = concurrent.drop_invalid(conn, build, log)
    except psycopg.Error:
        return f"\nThe INVALID index {build.name} it may have left is dropped and built again by the next run."
    return f"\nThe INVALID index {dropped} it left was dropped." if dropped else ""


def _clean_up_after_failed_reindex(conn: psycopg.Connection, target: concurrent.Reindex, log) -> str:
    """After a failed REINDEX CONCURRENTLY on a live connection, drop the `_ccnew`/`_ccold` it left (each
    costs every write on the table). Best effort: the next run does it otherwise."""
    if conn.closed:
        return "\nThe connection was lost: the next run drops the INVALID _ccnew/_ccold index it may have left."
    try:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        dropped = concurrent.drop_reindex_leftovers(conn, target, log)
    except psycopg.Error:
        return "\nThe INVALID _ccnew/_ccold index it may have left is dropped by the next run."
    return f"\nThe INVALID index(es) {', '.join(dropped)} it left were dropped." if dropped else ""


def set_session_timeouts(conn: psycopg.Connection, timeouts: Timeouts) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 [timeouts.lock_timeout, timeouts.statement_timeout])


def set_local_timeouts(conn: psycopg.Connection, timeouts: Timeouts) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                 [timeouts.lock_timeout, timeouts.statement_timeout])


def reset_session(conn: psycopg.Connection) -> None:
    if not conn.closed:  # a terminated backend or a stopped server took the session with it
        conn.execute("RESET lock_timeout; RESET statement_timeout")
