"""Loading fixtures: COPY the file into a staging table shaped like the target (its CHECK constraints
included, so a bad value is reported with its file row), then one `INSERT ... ON CONFLICT (natural key)
DO NOTHING` per fixture. Rows that exist are never touched, nothing is ever deleted; every inserted
row is written to the audit log in the same statement.

All fixtures of a run share one transaction, run as the import role (no DELETE, no TRUNCATE);
a dry run does all of it and rolls back, so its counts are exactly what a real run would insert.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from hrms_pipelines import locks, settings
from hrms_pipelines.resources import IMPORTER, MIGRATOR, READER, HrmsDatabase, local_transaction
from hrms_pipelines.seeding import fixtures as fx
from hrms_pipelines.seeding.fixtures import Fixture, FixtureError, FixtureRows

LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "60s"
SHOWN_KEYS = 25


def admin_password_hash() -> str:
    """An argon2id hash (salted) of the password in HRMS_STAGING_ADMIN_PASSWORD; unset -> refused."""
    from argon2 import PasswordHasher

    password = os.environ.get(fx.STAGING_ADMIN_PASSWORD_ENV, "")
    if not password:
        raise FixtureError(
            f"the staging admin user needs its password in the environment variable {fx.STAGING_ADMIN_PASSWORD_ENV}, "
            "which is unset or empty; set it where the job runs (there is no default password)"
        )
    if len(password) < fx.MIN_ADMIN_PASSWORD_LENGTH:
        raise FixtureError(
            f"the password in {fx.STAGING_ADMIN_PASSWORD_ENV} is shorter than {fx.MIN_ADMIN_PASSWORD_LENGTH} characters; "
            "choose a longer one"
        )
    return PasswordHasher().hash(password)


COMPUTED: dict[str, Callable[[], str]] = {"password_hash": admin_password_hash}
# Columns that never go to the audit log.
SECRET_COLUMNS = ("password_hash",)


@dataclass
class FixtureResult:
    fixture: Fixture
    rows_in_file: int
    inserted: list[str] = field(default_factory=list)
    """Natural keys of the rows this run inserted (or would insert, in a dry run)."""
    notes: dict[str, int] = field(default_factory=dict)
    """Further counts, e.g. the permission grants of newly inserted roles."""

    @property
    def already_present(self) -> int:
        return self.rows_in_file - len(self.inserted)


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _columns(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(prefix, n) if prefix else sql.Identifier(n) for n in names)


def _row_key(fixture: Fixture, alias: str) -> sql.Composable:
    return sql.SQL("concat_ws('/', {})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, c)) for c in fixture.natural_key)
    )


def stage(conn: psycopg.Connection, rows: FixtureRows) -> sql.Identifier:
    """COPY the file into a temp table shaped like the target table, constraints included.

    A value of the wrong type or one that breaks a CHECK constraint fails here, and the error names
    the file row, column and value.
    """
    fixture = rows.fixture
    stage_name = _ident(f"seed_stage_{fixture.key}")
    target = _ident(settings.HR_SCHEMA, fixture.table)
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) ON COMMIT DROP"
    ).format(stage_name, target))
    # Columns this fixture does not fill (the surrogate id) may be empty in the stage.
    filled = set(fixture.table_columns)
    not_null = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "AND attnotnull AND atthasdef = false",
        [f"pg_temp.seed_stage_{fixture.key}"],
    ).fetchall()
    for (column,) in not_null:
        if column not in filled:
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(stage_name, _ident(column)))
    for column in fixture.extra_columns:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(stage_name, _ident(column)))
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN seed_row integer").format(stage_name))

    computed = {name: COMPUTED[name]() for name in fixture.computed}
    copy_columns = list(fixture.columns) + list(computed) + ["seed_row"]
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(stage_name, _columns(copy_columns))
    try:
        with conn.cursor() as cur, cur.copy(copy) as writer:
            for number, values in enumerate(rows.rows, start=1):
                writer.write_row([*values, *computed.values(), number])
    except psycopg.Error as exc:
        raise FixtureError(fx.describe_copy_error(rows, exc.diag.message_primary or str(exc), exc.diag.context)) from None

    duplicates = conn.execute(sql.SQL(
        "SELECT {key}, array_agg(seed_row ORDER BY seed_row) FROM {stage} GROUP BY {cols} HAVING count(*) > 1 LIMIT 5"
    ).format(key=_row_key(fixture, "s"), stage=sql.SQL("{} s").format(stage_name), cols=_columns(fixture.natural_key, "s"))
    ).fetchall()
    if duplicates:
        listed = "; ".join(f"{key!r} on rows {', '.join(map(str, lines))}" for key, lines in duplicates)
        raise FixtureError(
            f"{rows.path}: the natural key ({', '.join(fixture.natural_key)}) must be unique in the file: {listed}"
        )
    for lookup in fixture.lookups:
        _resolve_lookup(conn, rows, stage_name, lookup)
    return stage_name


def _resolve_lookup(conn: psycopg.Connection, rows: FixtureRows, stage_name: sql.Identifier, lookup: fx.Lookup) -> None:
    conn.execute(sql.SQL("UPDATE {stage} s SET {target} = t.id FROM {table} t WHERE t.{key} = s.{column}").format(
        stage=stage_name, target=_ident(lookup.target_column), table=_ident(settings.HR_SCHEMA, lookup.table),
        key=_ident(lookup.key), column=_ident(lookup.file_column),
    ))
    missing = conn.execute(sql.SQL(
        "SELECT seed_row, {column} FROM {stage} WHERE {column} IS NOT NULL AND {target} IS NULL ORDER BY seed_row LIMIT 1"
    ).format(column=_ident(lookup.file_column), stage=stage_name, target=_ident(lookup.target_column))).fetchone()
    if missing:
        line, value = missing
        raise FixtureError(
            f"{rows.path}: row {line} (file line {line + 1}), column {lookup.file_column}, value {value!r}: "
            f"no row of {settings.HR_SCHEMA}.{lookup.table} has {lookup.key} = {value!r}"
        )


def insert(conn: psycopg.Connection, rows: FixtureRows, stage_name: sql.Identifier, *, run_id: str | None) -> list[str]:
    """Insert the staged rows that are not there yet; audit each one. Returns their natural keys."""
    fixture = rows.fixture
    columns = fixture.table_columns
    secret_drop = sql.SQL("").join(sql.SQL(" - {}").format(sql.Literal(c)) for c in SECRET_COLUMNS)
    query = sql.SQL("""
        WITH inserted AS (
            INSERT INTO {target} ({columns})
            SELECT {stage_columns} FROM {stage} s ORDER BY s.seed_row
            ON CONFLICT ({natural_key}) DO NOTHING
            RETURNING *
        ), audited AS (
            INSERT INTO {auditlog} (run_id, source, action, table_name, row_key, after)
            SELECT %(run_id)s, %(source)s, 'seed', %(table)s, {row_key}, to_jsonb(i){secret_drop}
            FROM inserted i
            RETURNING row_key
        )
        SELECT row_key FROM audited ORDER BY row_key
    """).format(
        target=_ident(settings.HR_SCHEMA, fixture.table),
        columns=_columns(columns),
        stage_columns=_columns(columns, "s"),
        stage=stage_name,
        natural_key=_columns(fixture.natural_key),
        auditlog=_ident(settings.HR_SCHEMA, "core_auditlog"),
        row_key=_row_key(fixture, "i"),
        secret_drop=secret_drop,
    )
    params = {"run_id": run_id, "source": f"seed:{fixture.key}", "table": fixture.table}
    try:
        return [key for (key,) in conn.execute(query, params).fetchall()]
    except psycopg.errors.IntegrityError as exc:
        detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
        raise FixtureError(f"{rows.path}: {exc.diag.message_primary}{detail}") from None


def grant_role_permissions(conn: psycopg.Connection, rows: FixtureRows, stage_name: sql.Identifier, new_roles: list[str]) -> int:
    """The permissions of the roles this run created. Roles that existed keep the grants an admin gave them."""
    unknown = conn.execute(sql.SQL("""
        SELECT s.seed_row, p.code
        FROM {stage} s, regexp_split_to_table(btrim(coalesce(s.permissions, '')), '\\s+') AS p(code)
        WHERE p.code NOT IN ('', '*')
          AND NOT EXISTS (SELECT FROM {permission} WHERE code = p.code)
        ORDER BY s.seed_row LIMIT 1
    """).format(stage=stage_name, permission=_ident(settings.HR_SCHEMA, "core_permission"))).fetchone()
    if unknown:
        line, code = unknown
        raise FixtureError(
            f"{rows.path}: row {line} (file line {line + 1}), column permissions, value {code!r}: "
            "not a permission code of the permissions fixture (use codes from permissions.csv, or * for all)"
        )
    if not new_roles:
        return 0
    granted = conn.execute(sql.SQL("""
        INSERT INTO {role_permission} (role_id, permission_id)
        SELECT r.id, p.id
        FROM {stage} s
        JOIN {role} r ON r.code = s.code
        JOIN {permission} p
          ON btrim(s.permissions) = '*'
          OR p.code = ANY (regexp_split_to_array(btrim(s.permissions), '\\s+'))
        WHERE r.code = ANY (%(new_roles)s)
        ON CONFLICT DO NOTHING
        RETURNING 1
    """).format(
        role_permission=_ident(settings.HR_SCHEMA, "core_rolepermission"), stage=stage_name,
        role=_ident(settings.HR_SCHEMA, "core_role"), permission=_ident(settings.HR_SCHEMA, "core_permission"),
    ), {"new_roles": new_roles}).fetchall()
    return len(granted)


def load_fixtures(
    hrms_db: HrmsDatabase,
    keys: Sequence[str],
    *,
    environment: str,
    dry_run: bool = False,
    run_id: str | None = None,
    directory: Path | None = None,
    log: Callable[[str], None] = lambda _message: None,
) -> list[FixtureResult]:
    """Load the named fixtures (and what they require) in one transaction as the import role; the
    access-control fixtures in one as the migrator (the importer may not write them), committed first.

    Every fixture, required ones included, must be allowed in `environment`: the refusal happens
    before anything is read or written.
    """
    requested = [fx.get(key) for key in keys]
    ordered = fx.with_requirements(requested)
    for fixture in ordered:
        fx.ensure_allowed(fixture, environment)
    files = [fx.read(fixture, directory) for fixture in ordered]

    results: list[FixtureResult] = []
    # Taken as the transaction's first statement; a second seed started outside the run queue waits
    # for it up to HRMS_IMPORT_LOCK_WAIT (hrms_pipelines.locks).
    lock = locks.TransactionLock(locks.SEEDS, settings.import_lock_wait(), log=log, run_id=run_id)
    timeouts = {"lock_timeout": LOCK_TIMEOUT, "statement_timeout": STATEMENT_TIMEOUT, "force_rollback": dry_run}
    try:
        # Access control (permissions, roles and their grants, login accounts) is never the importer's:
        # the schema's owner writes it, in its own transaction, which commits just before the other's.
        with hrms_db.connection(IMPORTER) as conn, local_transaction(conn, lock=lock, **timeouts):
            with hrms_db.connection(MIGRATOR) as owner, local_transaction(owner, **timeouts):
                for rows in files:
                    session = owner if rows.fixture.table in fx.ACCESS_CONTROL_TABLES else conn
                    stage_name = stage(session, rows)
                    inserted = insert(session, rows, stage_name, run_id=run_id)
                    result = FixtureResult(rows.fixture, len(rows.rows), inserted)
                    if rows.fixture.key == "roles":
                        result.notes["permission grants"] = grant_role_permissions(session, rows, stage_name, inserted)
                    results.append(result)
                    verb = "would insert" if dry_run else "inserted"
                    log(f"{rows.fixture.key}: {len(rows.rows)} row(s) in {rows.path.name}, {verb} {len(inserted)}, "
                        f"{result.already_present} already present")
    except locks.LockNotAvailable as exc:
        raise FixtureError(str(exc)) from None
    except psycopg.errors.LockNotAvailable as exc:
        raise FixtureError(
            f"a table the seed writes is locked by another session (lock_timeout {LOCK_TIMEOUT}): "
            f"{exc.diag.message_primary}; try again when it is free"
        ) from None
    return results


def missing_natural_keys(hrms_db: HrmsDatabase, fixture: Fixture, directory: Path | None = None) -> tuple[int, list[str]]:
    """(rows in the file, natural keys of the file that are not in the table), read only."""
    rows = fx.read(fixture, directory)
    indexes = [fixture.columns.index(c) for c in fixture.natural_key]
    stage_name = _ident(f"seed_check_{fixture.key}")
    target = _ident(settings.HR_SCHEMA, fixture.table)
    with hrms_db.connection(READER) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                stage_name, _columns(fixture.natural_key), target))
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                    stage_name, _columns(fixture.natural_key))) as writer:
                for values in rows.rows:
                    writer.write_row([values[i] for i in indexes])
            missing = conn.execute(sql.SQL(
                "SELECT {key} FROM {stage} s WHERE NOT EXISTS (SELECT FROM {target} t WHERE {match}) ORDER BY 1"
            ).format(
                key=_row_key(fixture, "s"), stage=stage_name, target=target,
                match=sql.SQL(" AND ").join(
                    sql.SQL("t.{c} = s.{c}").format(c=_ident(c)) for c in fixture.natural_key),
            )).fetchall()
    return len(rows.rows), [key for (key,) in missing]
