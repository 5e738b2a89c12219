"""The migration runner: ledger, plan, apply under timeouts, revert, verify.

What `run-migrations.sh` did, over plain SQL files:
1. (the safety analysis runs first, in the `apply_migrations` job)
2. plan: pending migrations in dependency order, refusing when an applied file changed
3. every migration under `lock_timeout` (10s) and `statement_timeout` (30s), in its own
   transaction unless marked non-transactional, its ledger row written in the same transaction
4. verify: nothing pending, checksums match, expected tables present, no INVALID index,
   every foreign key validated

Two runners never interleave: the whole run holds a session advisory lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from pglast import ast, parse_sql
from pglast.enums import ObjectType

from hrms_pipelines import locks, settings
from hrms_pipelines.migrations.execute import (  # noqa: F401 (Timeouts, Observer: the runner's API)
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    PLAIN,
    Observer,
    Timeouts,
    execute_file,
    reset_session,
    set_local_timeouts,
)
from hrms_pipelines.migrations.files import Migration, MigrationError, check_app

LEDGER = f"{settings.META_SCHEMA}.migration_ledger"
DEFAULT_RUNNER_WAIT = "5min"

LEDGER_SCHEMA_DDL = f"CREATE SCHEMA IF NOT EXISTS {settings.META_SCHEMA}"
LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER} (
    app          text        NOT NULL,
    version      text        NOT NULL CHECK (version ~ '^[0-9]{{4}}$'),
    name         text        NOT NULL,
    checksum     char(64)    NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms  integer     NOT NULL CHECK (duration_ms >= 0),
    run_id       text,
    PRIMARY KEY (app, version)
);
"""


@dataclass(frozen=True)
class LedgerRow:
    app: str
    version: str
    name: str
    checksum: str
    applied_at: datetime
    duration_ms: int
    run_id: str | None


@dataclass
class Applied:
    migration: Migration
    duration_ms: int


@dataclass
class VerifyReport:
    pending: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)
    invalid_indexes: list[str] = field(default_factory=list)
    unvalidated_foreign_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.pending or self.changed or self.missing_tables or self.invalid_indexes or self.unvalidated_foreign_keys)

    def problems(self) -> list[str]:
        out = []
        for title, items in (
            ("pending migrations", self.pending),
            ("applied files changed since they were applied", self.changed),
            ("expected tables missing", self.missing_tables),
            ("INVALID indexes (a failed concurrent build; drop and rebuild them)", self.invalid_indexes),
            ("foreign keys not validated", self.unvalidated_foreign_keys),
        ):
            if items:
                out.append(f"{title}: {', '.join(items)}")
        return out


# --------------------------------------------------------------------------------------------
# Ledger


def ensure_ledger(conn: psycopg.Connection) -> None:
    """The ledger table; its schema only when missing (CREATE SCHEMA needs CREATE on the database, even
    with IF NOT EXISTS, which the migrator does not need once the administrator made hrms_meta)."""
    with conn.transaction():
        if conn.execute("SELECT to_regnamespace(%s) IS NULL", [settings.META_SCHEMA]).fetchone()[0]:
            conn.execute(LEDGER_SCHEMA_DDL)
        conn.execute(LEDGER_DDL)


def ledger_exists(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [LEDGER]).fetchone()[0]


def read_ledger(conn: psycopg.Connection) -> dict[tuple[str, str], LedgerRow]:
    if not ledger_exists(conn):
        return {}
    rows = conn.execute(
        f"SELECT app, version, name, checksum, applied_at, duration_ms, run_id FROM {LEDGER} ORDER BY applied_at, app, version"
    ).fetchall()
    return {(r[0], r[1]): LedgerRow(*r) for r in rows}


def changed_files(migrations: Sequence[Migration], ledger: dict[tuple[str, str], LedgerRow]) -> list[str]:
    return [
        f"{m.up.path} (applied with sha256 {ledger[m.key].checksum[:12]}…, now {m.up.checksum[:12]}…)"
        for m in migrations
        if m.key in ledger and not m.up.accepts_checksum(ledger[m.key].checksum)
    ]


def plan(migrations: Sequence[Migration], ledger: dict[tuple[str, str], LedgerRow], *, app: str | None = None) -> list[Migration]:
    """Pending migrations in dependency order; refuses when an applied file changed."""
    if changed := changed_files(migrations, ledger):
        raise MigrationError(
            "refusing to run: an applied migration file changed since it was applied "
            "(write a new migration instead of editing an applied one): " + "; ".join(changed)
        )
    check_app(migrations, app)
    pending = [m for m in migrations if m.key not in ledger]
    if app is None:
        return pending
    selected = [m for m in pending if m.app == app]
    # a migration of the chosen app may depend on pending migrations of other apps
    needed = {m.key for m in selected}
    by_key = {m.key: m for m in migrations}
    stack = list(needed)
    while stack:
        for dep in by_key[stack.pop()].depends_on:
            if dep not in ledger and dep not in needed:
                needed.add(dep)
                stack.append(dep)
    return [m for m in pending if m.key in needed]


# --------------------------------------------------------------------------------------------
# Apply and revert


def apply(
    conn: psycopg.Connection,
    migrations: Sequence[Migration],
    *,
    app: str | None = None,
    timeouts: Timeouts | None = None,
    run_id: str | None = None,
    runner_wait: str = DEFAULT_RUNNER_WAIT,
    log=print,
    observer: Observer = PLAIN,
) -> list[Applied]:
    """Apply every pending migration (of `app`, when given) in order; stops at the first failure.

    `conn` must be a dedicated connection outside a transaction; it is left in autocommit mode.
    """
    timeouts = timeouts or Timeouts()
    conn.autocommit = True
    with locks.session_lock(conn, locks.MIGRATIONS, wait=runner_wait):
        ensure_ledger(conn)
        pending = plan(migrations, read_ledger(conn), app=app)  # planned under the lock
        done: list[Applied] = []
        for migration in pending:
            log(f"applying {migration.label}{'' if migration.transactional else ' (non-transactional)'}")
            observer.migration(migration, "up")
            started = time.monotonic()
            if migration.transactional:
                with conn.transaction():
                    set_local_timeouts(conn, timeouts)
                    execute_file(conn, migration.up, timeouts, transactional=True, observer=observer, log=log)
                    duration_ms = int((time.monotonic() - started) * 1000)
                    _write_ledger(conn, migration, duration_ms, run_id)
            else:
                try:
                    execute_file(conn, migration.up, timeouts, transactional=False, observer=observer, log=log)
                except MigrationError as exc:
                    raise MigrationError(
                        f"{exc}\n{migration.label} is non-transactional: statements before the failing one stay "
                        "applied. Its statements should be idempotent (IF NOT EXISTS); fix the cause and run again."
                    ) from exc
                finally:
                    reset_session(conn)
                duration_ms = int((time.monotonic() - started) * 1000)
                with conn.transaction():
                    _write_ledger(conn, migration, duration_ms, run_id)
            log(f"applied {migration.label} in {duration_ms} ms")
            done.append(Applied(migration, duration_ms))
        return done


def _write_ledger(conn: psycopg.Connection, migration: Migration, duration_ms: int, run_id: str | None) -> None:
    conn.execute(
        f"INSERT INTO {LEDGER} (app, version, name, checksum, duration_ms, run_id) VALUES (%s, %s, %s, %s, %s, %s)",
        [migration.app, migration.version, migration.name, migration.up.checksum, duration_ms, run_id],
    )


def revert_plan(
    migrations: Sequence[Migration], ledger: dict[tuple[str, str], LedgerRow], *, app: str | None, target: str
) -> list[Migration]:
    """Applied migrations to revert, newest first, to bring `app` (or every app) back to `target`.

    `target` is a version of the app ("0003"), or "zero" to revert all of it.
    """
    check_app(migrations, app)
    if app is None:
        if target != "zero":
            raise MigrationError("reverting every app needs target 'zero'; name an app to revert to a version")
    elif target != "zero" and (app, target) not in {m.key for m in migrations}:
        versions = ", ".join(m.version for m in migrations if m.app == app)
        raise MigrationError(f"unknown target {app}/{settings.shown(target, quoted=False)}: {app} has versions {versions} (or use 'zero')")
    if changed := changed_files(migrations, ledger):
        raise MigrationError("refusing to revert: applied migration files changed: " + "; ".join(changed))
    doomed = [
        m for m in migrations
        if m.key in ledger and (app is None or (m.app == app and (target == "zero" or m.version > target)))
    ]
    doomed_keys = {m.key for m in doomed}
    for m in migrations:
        if m.key in ledger and m.key not in doomed_keys:
            blocking = [d for d in m.depends_on if d in doomed_keys]
            if blocking:
                raise MigrationError(
                    f"cannot revert {blocking[0][0]}/{blocking[0][1]}: applied migration {m.label} depends on it; "
                    f"revert {m.app} first"
                )
    doomed.reverse()
    for m in doomed:
        if not m.reversible:
            raise MigrationError(
                f"refusing to revert: {m.label} has no down file ({m.down_path}), "
                "so it is irreversible; nothing was reverted. Restore from a backup or point-in-time recovery instead."
            )
    return doomed


def revert(
    conn: psycopg.Connection,
    migrations: Sequence[Migration],
    *,
    app: str | None,
    target: str,
    timeouts: Timeouts | None = None,
    runner_wait: str = DEFAULT_RUNNER_WAIT,
    log=print,
) -> list[Migration]:
    timeouts = timeouts or Timeouts()
    conn.autocommit = True
    with locks.session_lock(conn, locks.MIGRATIONS, wait=runner_wait):
        ensure_ledger(conn)
        doomed = revert_plan(migrations, read_ledger(conn), app=app, target=target)
        for migration in doomed:
            assert migration.down is not None
            log(f"reverting {migration.label}")
            if migration.down.transactional:
                with conn.transaction():
                    set_local_timeouts(conn, timeouts)
                    execute_file(conn, migration.down, timeouts, transactional=True, log=log)
                    conn.execute(f"DELETE FROM {LEDGER} WHERE app = %s AND version = %s", list(migration.key))
            else:
                try:
                    execute_file(conn, migration.down, timeouts, transactional=False, log=log)
                finally:
                    reset_session(conn)
                with conn.transaction():
                    conn.execute(f"DELETE FROM {LEDGER} WHERE app = %s AND version = %s", list(migration.key))
            log(f"reverted {migration.label}")
        return doomed


# --------------------------------------------------------------------------------------------
# Verify


def expected_tables(applied: Iterable[Migration]) -> list[str]:
    """Tables the applied migrations leave behind: created, minus dropped, following renames."""
    tables: dict[str, None] = {}
    for migration in applied:
        for node in parse_sql(migration.up.text):
            stmt = node.stmt
            if isinstance(stmt, ast.CreateStmt):
                tables[_qualified(stmt.relation)] = None
            elif isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
                for obj in stmt.objects:
                    tables.pop(_qualified_names(obj), None)
            elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == ObjectType.OBJECT_TABLE:
                old = _qualified(stmt.relation)
                if old in tables:
                    del tables[old]
                    schema = old.rsplit(".", 1)[0]
                    tables[f"{schema}.{stmt.newname}"] = None
    return list(tables)


def _qualified(relation: ast.RangeVar) -> str:
    return f"{relation.schemaname or 'public'}.{relation.relname}"


def _qualified_names(obj) -> str:
    names = [n.sval for n in obj]
    return ".".join(names) if len(names) > 1 else f"public.{names[0]}"


def verify(conn: psycopg.Connection, migrations: Sequence[Migration], *, app: str | None = None) -> VerifyReport:
    ledger = read_ledger(conn)
    scope = [m for m in migrations if app is None or m.app == app]
    report = VerifyReport()
    report.pending = [m.label for m in scope if m.key not in ledger]
    report.changed = changed_files(scope, ledger)
    applied = [m for m in migrations if m.key in ledger]
    report.missing_tables = [
        t for t in expected_tables(applied) if conn.execute("SELECT to_regclass(%s) IS NULL", [t]).fetchone()[0]
    ]
    report.invalid_indexes = [
        r[0] for r in conn.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
    ]
    report.unvalidated_foreign_keys = [
        f"{r[0]}.{r[1]}" for r in conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE c.contype = 'f' AND NOT c.convalidated AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2"
        ).fetchall()
    ]
    return report
