"""Least privilege, as PostgreSQL enforces it: each duty logs in as its own role, and each role is
refused what its duty is not for. Every attempt here is made the way an intruder with that role's
connection would make it, and checked for the database's refusal (and that nothing changed)."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from hrms_pipelines import roles, settings
from hrms_pipelines.resources import IMPORTER, MIGRATOR, READER, RESTORER, HrmsDatabase
from hrms_pipelines_tests.conftest import as_role

JOB_ROLES = [MIGRATOR, IMPORTER, RESTORER, READER]


def connect(url: str, duty: roles.Duty, **kwargs) -> psycopg.Connection:
    return psycopg.connect(as_role(url, duty), **kwargs)


def refused(url: str, duty: roles.Duty, statement: str, error=psycopg.errors.InsufficientPrivilege, match: str = "") -> None:
    with connect(url, duty, autocommit=True) as conn:
        with pytest.raises(error, match=match):
            conn.execute(statement)


@pytest.fixture
def audited(database_url: str) -> str:
    """Two audit rows, written the only way any role may: INSERT."""
    with connect(database_url, IMPORTER) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, after) "
                     "VALUES ('r1', 'import:users', 'update', 'employees_employee', '1', '{\"salary\": 1}'), "
                     "       ('r1', 'import:users', 'insert', 'employees_employee', '2', NULL)")
    return database_url


def audit_rows(url: str) -> list:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT a::text FROM hrms.core_auditlog a ORDER BY id").fetchall()


@pytest.mark.parametrize("duty", JOB_ROLES, ids=lambda d: d.key)
def test_the_audit_log_is_append_only_for_every_job_role(audited, duty):
    before = audit_rows(audited)
    with psycopg.connect(audited) as conn:
        month = conn.execute("SELECT tableoid::regclass::text FROM hrms.core_auditlog LIMIT 1").fetchone()[0]
    for statement in ("UPDATE hrms.core_auditlog SET after = '{}'", "DELETE FROM hrms.core_auditlog",
                      "TRUNCATE hrms.core_auditlog", f"UPDATE {month} SET run_id = 'x'", f"DELETE FROM {month}",
                      f"TRUNCATE {month}"):
        refused(audited, duty, statement, match="permission denied|append-only")
    assert audit_rows(audited) == before


def test_the_owner_cannot_lose_an_audit_row_even_from_the_default_partition(audited):
    """The migrator may not delete from the default partition at all (core/0005); its owner keeps
    DELETE there for the partition job's move, and a delete that moves nothing fails at commit."""
    with connect(audited, MIGRATOR) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (created_at, source, action, table_name) "
                     "VALUES ('2099-01-01', 'far', 'insert', 't')")
    before = audit_rows(audited)
    refused(audited, MIGRATOR, "DELETE FROM hrms.core_auditlog_default WHERE source = 'far'",
            match="permission denied for table core_auditlog_default")
    with psycopg.connect(audited, autocommit=True) as conn:
        conn.execute("SET ROLE hrms_audit_owner")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="left the default partition without arriving"):
            with conn.transaction():
                conn.execute("DELETE FROM hrms.core_auditlog_default WHERE source = 'far'")
    assert audit_rows(audited) == before


@pytest.mark.parametrize("duty", JOB_ROLES, ids=lambda d: d.key)
def test_no_job_role_can_become_another_or_reach_the_server(database_url, duty):
    others = [d.role for d in JOB_ROLES if d is not duty] + ["postgres", "pg_read_server_files"]
    with connect(database_url, duty) as conn:
        conn.execute("RESET ROLE")  # goes back to itself: there is nothing above it
        assert conn.execute("SELECT current_user, session_user").fetchone() == (duty.role, duty.role)
    for other in others:
        refused(database_url, duty, f'SET ROLE "{other}"', match="permission denied to set role")
        refused(database_url, duty, f"SET SESSION AUTHORIZATION \"{other}\"", match="permission denied")
    refused(database_url, duty, "COPY (SELECT 1) TO PROGRAM 'id'", match="permission denied|must be superuser")
    refused(database_url, duty, "COPY hrms.core_role FROM PROGRAM 'id'", match="permission denied|must be superuser")
    refused(database_url, duty, "SELECT pg_read_file('/etc/passwd')", match="permission denied")
    refused(database_url, duty, "SELECT pg_ls_dir('.')", match="permission denied")
    refused(database_url, duty, "SELECT lo_import('/etc/passwd')", match="permission denied")
    refused(database_url, duty, "ALTER SYSTEM SET log_statement = 'all'", match="permission denied")
    refused(database_url, duty, f"CREATE ROLE intruder_{duty.key} SUPERUSER", match="permission denied")


@pytest.mark.parametrize("duty", [IMPORTER, RESTORER, READER], ids=lambda d: d.key)
def test_only_the_migrator_creates_in_the_schema(database_url, duty):
    refused(database_url, duty, "CREATE TABLE hrms.intruder (id int)", match="permission denied for schema hrms")
    refused(database_url, duty, "CREATE FUNCTION hrms.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            match="permission denied for schema hrms")
    refused(database_url, duty, "CREATE TABLE public.intruder (id int)", match="permission denied for schema public")


def test_the_reader_reads_and_changes_nothing_and_never_sees_password_hashes(database_url):
    for statement in ("INSERT INTO hrms.org_organization (code, name) VALUES ('X', 'X')",
                      "UPDATE hrms.employees_employee SET status = 'active'", "DELETE FROM hrms.ladders_ladder",
                      "SELECT password_hash FROM hrms.core_useraccount"):
        refused(database_url, READER, statement, match="permission denied")
    with connect(database_url, READER) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee").fetchone()[0] == 0
        assert conn.execute("SELECT count(username) FROM hrms.core_useraccount").fetchone()[0] == 0


def test_the_restorer_touches_only_what_an_import_stage_backs_up(database_url):
    for table in ("core_useraccount", "core_role", "core_permission", "core_backfillcheckpoint", "payroll_payslip"):
        refused(database_url, RESTORER, f"DELETE FROM hrms.{table}", match="permission denied")
    with connect(database_url, RESTORER) as conn:
        conn.execute("DELETE FROM hrms.history_timelineevent")  # a restore's own work: allowed


def test_an_import_record_is_final_once_finished_and_the_importer_changes_only_its_outcome(database_url):
    with connect(database_url, IMPORTER) as conn:
        record = conn.execute("INSERT INTO hrms.imports_importrecord (stage, file_name, file_sha256, outcome) "
                              "VALUES ('users', 'users.csv', repeat('a', 64), 'running') RETURNING id").fetchone()[0]
        conn.execute("UPDATE hrms.imports_importrecord SET outcome = 'failed', rows_read = 3 WHERE id = %s", [record])
    refused(database_url, IMPORTER, f"UPDATE hrms.imports_importrecord SET outcome = 'succeeded' WHERE id = {record}",
            match="is finished")
    refused(database_url, IMPORTER, f"UPDATE hrms.imports_importrecord SET file_sha256 = repeat('b', 64) WHERE id = {record}",
            match="permission denied")
    refused(database_url, IMPORTER, "UPDATE hrms.core_useraccount SET is_superuser = true", match="permission denied")


@pytest.mark.parametrize("attribute", ["SUPERUSER", "CREATEROLE", "BYPASSRLS"])
def test_a_connection_more_privileged_than_its_duty_is_refused(pg_admin_url, database_url, attribute, monkeypatch):
    name = f"too_strong_{attribute.lower()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {name}")
        admin.execute(f"CREATE ROLE {name} LOGIN {attribute}")
    try:
        monkeypatch.setenv(IMPORTER.url_env, roles.with_user(database_url, name))
        db = HrmsDatabase()  # the deployment's configuration: HRMS_IMPORTER_URL
        with pytest.raises(roles.RoleError, match=f"refusing to connect as '{name}' for the importer duty"):
            with db.connection(IMPORTER) as conn:
                conn.execute("SELECT 1")
    finally:
        from hrms_pipelines import resources

        resources.dispose_engines(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def test_the_owner_of_the_schema_is_refused_for_any_duty_but_the_migrator(database_url, monkeypatch):
    monkeypatch.setenv(READER.url_env, as_role(database_url, MIGRATOR))
    db = HrmsDatabase()
    with pytest.raises(roles.RoleError, match="owns or may create objects in the hrms schema"):
        with db.connection(READER):
            pass


def test_every_duty_logs_in_as_its_own_role(hrms_db):
    for duty in JOB_ROLES:
        with hrms_db.connection(duty) as conn:
            assert conn.execute("SELECT session_user, current_user").fetchone() == (duty.role, duty.role)
            assert conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = session_user").fetchone() == (False,)
    assert settings.IMPORT_ROLE == IMPORTER.role


def test_an_authentication_failure_is_never_retried_as_transient(pg_admin_url):
    """The server's refusal to log a role in (SQLSTATE class 28) fails the step at once: retrying only
    locks accounts. A connection the server never answered stays transient."""
    from hrms_pipelines.retries import is_transient, transient_retries

    with pytest.raises(psycopg.OperationalError) as refused_login:
        psycopg.connect(roles.with_user(pg_admin_url, "no_such_role_anywhere"))
    assert "does not exist" in str(refused_login.value) and not is_transient(refused_login.value)
    with pytest.raises(psycopg.OperationalError) as unreachable:
        psycopg.connect("postgresql://x@127.0.0.1:1/none", connect_timeout=2)
    assert is_transient(unreachable.value)

    @dg.op
    @transient_retries
    def log_in(context) -> None:
        psycopg.connect(roles.with_user(pg_admin_url, "no_such_role_anywhere"))

    @dg.job
    def job() -> None:
        log_in()

    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []


@pytest.mark.parametrize("url,secret", [
    ("postgresql://hr_admin:s3cret@db.example.org:5432/hrms", "s3cret"),
    ("postgresql://hr_admin:p@ss/w?rd@db.example.org/hrms", "p@ss/w?rd"),          # unencoded @, / and ?
    ("postgresql://hr_admin:s%40cret@db.example.org/hrms?sslmode=require", "s%40cret"),
    ("postgresql:///hrms?host=/tmp&user=hr&password=s3cret", "s3cret"),
    ("postgresql://db.example.org/hrms?sslpassword=keypass&sslmode=verify-full", "keypass"),
    ("host=db.example.org user=hr password=s3cret dbname=hrms", "s3cret"),
    ("host=db.example.org user=hr password='s3 cret' sslpassword=keypass dbname=hrms", "keypass"),
    ("postgresql+psycopg2://dagster:s3cret@db/dagster", "s3cret"),
])
def test_passwords_are_masked_wherever_a_url_or_dsn_is_shown(url, secret):
    from hrms_pipelines.resources import redact

    shown = redact(url)
    assert secret not in shown and "***" in shown
    assert "s3" not in shown.replace("s3cret", "")  # no fragment of a quoted password either


def test_an_existing_deployment_migrated_by_a_superuser_moves_to_the_duty_roles(pg_admin_url, migrations):
    """A database whose first migration ran as the superuser with the first version of core/0001
    (which created the import role itself): bootstrap hands the schema to the migrator, the ledger's
    old checksum is accepted (the file declares it superseded), and the rest applies as the migrator."""
    from pathlib import Path

    from hrms_pipelines.migrations import runner
    from hrms_pipelines_tests.conftest import _url, create_database, drop_database

    first_version = (Path(__file__).parent / "data" / "core_0001_foundation_first_version.up.sql").read_text()
    core_0001 = next(m for m in migrations if m.key == ("core", "0001"))
    name = create_database(pg_admin_url, prefix="upgrade")
    url = _url(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as admin:  # what the old runner did, as the superuser
            admin.execute("DROP SCHEMA hrms, hrms_meta")  # an old bootstrap created no schema
            runner.ensure_ledger(admin)
            with admin.transaction():
                admin.execute(first_version)
                admin.execute(f"INSERT INTO {runner.LEDGER} (app, version, name, checksum, duration_ms) "
                              "VALUES ('core', '0001', 'foundation', encode(sha256(%s::bytea), 'hex'), 1)",
                              [first_version.encode()])
            assert admin.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'hrms'").fetchone()[0] == "postgres"
            roles.bootstrap(admin, name)
            owners = admin.execute("SELECT DISTINCT relowner::regrole::text FROM pg_class c JOIN pg_namespace n "
                                   "ON n.oid = c.relnamespace WHERE n.nspname IN ('hrms', 'hrms_meta')").fetchall()
            assert owners == [("hrms_migrator",)]
            assert admin.execute("SELECT nspname, nspowner::regrole::text FROM pg_namespace WHERE nspname LIKE 'hrms%' "
                                 "ORDER BY 1").fetchall() == [("hrms", "hrms_audit_owner"), ("hrms_audit", "hrms_audit_owner"),
                                                             ("hrms_meta", "hrms_migrator"), ("hrms_monitor", "hrms_monitor")]
            assert admin.execute("SELECT count(*) FROM pg_auth_members WHERE member = 'hrms_importer'::regrole"
                                 ).fetchone()[0] == 0
        with psycopg.connect(as_role(url, MIGRATOR), autocommit=True) as conn:
            assert runner.changed_files(migrations, runner.read_ledger(conn)) == []
            assert core_0001.up.accepts_checksum(runner.read_ledger(conn)[("core", "0001")].checksum)
            applied = runner.apply(conn, migrations, log=lambda *_: None)
            assert len(applied) == len(migrations) - 1
            report = runner.verify(conn, migrations)
        assert report.ok, report.problems()
        refused(url, IMPORTER, "UPDATE hrms.core_auditlog SET run_id = 'x'", match="permission denied")
        refused(url, MIGRATOR, "ALTER TABLE hrms.core_auditlog DISABLE TRIGGER hrms_guard_auditlog_rows",
                match="must be owner")
    finally:
        drop_database(pg_admin_url, name)


def test_the_importer_cannot_read_password_hashes_nor_create_accounts_nor_grant_permissions(database_url):
    """Issue 17 item 7: the import stages write no access control (the seed writes it as the
    migrator), so PostgreSQL refuses the importer every part of it (core/0005)."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("INSERT INTO hrms.core_role (code, name) VALUES ('clerk', 'Clerk')")
        admin.execute("INSERT INTO hrms.core_permission (code, name) VALUES ('payroll.view', 'View payroll')")
        admin.execute("INSERT INTO hrms.core_useraccount (username, email, password_hash) "
                      "VALUES ('ann', 'ann@example.org', '$argon2id$x')")
        before = admin.execute("SELECT (SELECT count(*) FROM hrms.core_rolepermission), "
                               "(SELECT array_agg(is_superuser) FROM hrms.core_useraccount)").fetchone()
    for statement in (
        "SELECT password_hash FROM hrms.core_useraccount",
        "SELECT id FROM hrms.core_useraccount",
        "UPDATE hrms.core_useraccount SET is_superuser = true",
        "INSERT INTO hrms.core_useraccount (username, email, password_hash, is_superuser) "
        "VALUES ('eve', 'eve@example.org', '$argon2id$x', true)",
        "INSERT INTO hrms.core_rolepermission (role_id, permission_id) "
        "SELECT r.id, p.id FROM hrms.core_role r, hrms.core_permission p",
        "INSERT INTO hrms.core_rolepermission (role_id, permission_id) VALUES (1, 1)",
        "UPDATE hrms.core_role SET code = 'admin'",
        "INSERT INTO hrms.core_permission (code, name) VALUES ('all.all', 'All')",
    ):
        refused(database_url, IMPORTER, statement, match="permission denied")
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT (SELECT count(*) FROM hrms.core_rolepermission), "
                             "(SELECT array_agg(is_superuser) FROM hrms.core_useraccount)").fetchone() == before


def test_the_importer_cannot_read_another_sessions_statements_yet_reads_its_standbys_lag(database_url):
    """pg_read_all_stats would show the import role every session's statement text (a salary in an
    UPDATE, a password in an ALTER ROLE): it holds no role. A backfill reads its standbys' replay lag
    through hrms_monitor.standby_replay_lag(), whose owner (NOLOGIN) nobody can become."""
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT 'salary 98765 for employee 42' AS secret")
        pid = other.info.backend_pid
        with psycopg.connect(database_url) as admin:   # a session that may see it does
            assert "98765" in admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
        with connect(database_url, IMPORTER) as conn:
            assert conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() \
                == ("<insufficient privilege>",)
            assert conn.execute("SELECT pg_has_role('pg_read_all_stats', 'USAGE'), "
                                "pg_has_role('hrms_monitor', 'MEMBER')").fetchone() == (False, False)
            assert conn.execute("SELECT count(*) FROM hrms_monitor.standby_replay_lag()").fetchone() == (0,)  # no standby
        assert other.execute("SELECT pg_has_role('hrms_monitor', 'pg_read_all_stats', 'USAGE')").fetchone() == (True,)
    refused(database_url, IMPORTER, "SET ROLE hrms_monitor", match="permission denied to set role")
    for duty in (MIGRATOR, RESTORER, READER):
        refused(database_url, duty, "SELECT * FROM hrms_monitor.standby_replay_lag()", match="permission denied")
