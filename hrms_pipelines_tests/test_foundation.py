"""The foundation as a user meets it: the import role, Definitions, the migration jobs from the CLI."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.migrations import runner
from hrms_pipelines.resources import IMPORTER, READER, PinnedDatabase, redact

# every HR table (partitions of the audit log are reached through their parent)
HR_TABLES_SQL = """
    SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'hrms' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1
"""


def dagster_cli(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagster", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_import_role_can_read_insert_update_but_never_delete_or_truncate(hrms_db):
    with hrms_db.connection(READER) as conn:
        tables = [r[0] for r in conn.execute(HR_TABLES_SQL).fetchall()]
    assert "hrms.employees_employee" in tables and len(tables) >= 30

    with hrms_db.transaction(IMPORTER) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == settings.IMPORT_ROLE
        conn.execute("INSERT INTO hrms.org_organization (code, name) VALUES ('NHIA', 'National Health Insurance Authority')")
        conn.execute("UPDATE hrms.org_organization SET name = name || ' (Ghana)' WHERE code = 'NHIA'")

    for table in tables:
        for statement in (f"DELETE FROM {table}", f"TRUNCATE {table}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                with hrms_db.transaction(IMPORTER) as conn:
                    conn.execute(statement)
    with hrms_db.connection(READER) as conn:
        assert conn.execute("SELECT name FROM hrms.org_organization").fetchall() == [("National Health Insurance Authority (Ghana)",)]


def test_every_hr_table_is_granted_to_the_import_role(hrms_db):
    """SELECT, INSERT, UPDATE on every HR table, never DELETE or TRUNCATE; the audit trail and the
    backfills' undo records are INSERT-only for it, import records and backfill runs (their undo mark)
    updated per column; the application's access control and accounts are out of its reach (core/0005:
    the seed writes them as the migrator)."""
    insert_only = {"hrms.core_auditlog", "hrms.imports_importrecord", "hrms.core_backfillrun",
                   "hrms.core_backfillundo"}
    with hrms_db.connection(READER) as conn:
        rows = conn.execute(
            """
            SELECT t, has_table_privilege(%(role)s, t, 'SELECT'), has_table_privilege(%(role)s, t, 'INSERT'),
                   has_table_privilege(%(role)s, t, 'UPDATE'), has_table_privilege(%(role)s, t, 'DELETE'),
                   has_table_privilege(%(role)s, t, 'TRUNCATE')
            FROM (""" + HR_TABLES_SQL + """) AS tables(t)
            """,
            {"role": settings.IMPORT_ROLE},
        ).fetchall()
    expected = {t: (True, True, t not in insert_only, False, False) for t, *_ in rows}
    expected["hrms.core_alert"] = (True, False, False, False, False)  # alerts are the reader's to record
    for access_control in ("hrms.core_role", "hrms.core_permission", "hrms.core_rolepermission", "hrms.core_useraccount"):
        expected[access_control] = (False, False, False, False, False)
    for store in ("hrms.imports_undoinsert", "hrms.imports_undoupdate"):   # the imports' undo store: written, never read back
        expected[store] = (False, True, False, False, False)
    expected["hrms.imports_shortcutreset"] = (True, False, False, False, False)   # read; undo and restore write it
    expected["hrms.imports_linehash"] = (True, True, True, False, False)   # the known lines: one entry per key, upserted (imports/0005), never deleted
    assert {r[0]: tuple(r[1:]) for r in rows} == expected


def test_credentials_never_appear_in_the_displayed_url():
    assert redact("postgresql://hr_admin:s3cret@db.example.org:5432/hrms") == \
        "postgresql://hr_admin:***@db.example.org:5432/hrms"
    assert redact("postgresql://postgres:@/hrms?host=/srv/hrms/pgdata") == "postgresql://postgres@/hrms?host=/srv/hrms/pgdata"
    assert "s3cret" not in redact("postgresql:///hrms?host=/tmp&user=hr&password=s3cret")
    db = PinnedDatabase(location="postgresql://hr_admin:s3cret@db.example.org/hrms")
    assert "s3cret" not in db.display_url()


def test_definitions_load_and_validate(project_root, subprocess_env):
    from hrms_pipelines.definitions import defs

    assert isinstance(defs, dg.Definitions)
    for name in ("apply_migrations", "revert_migrations"):
        assert defs.resolve_job_def(name).name == name
    result = dagster_cli("definitions", "validate", "-w", "workspace.yaml", env=subprocess_env, cwd=project_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_apply_migrations_job_through_the_cli(empty_database_url, subprocess_env, project_root, tmp_path, migrations):
    env = dict(subprocess_env, **{settings.DATABASE_URL_ENV: empty_database_url})
    dry = tmp_path / "dry.yaml"
    dry.write_text("ops:\n  plan_migrations:\n    config:\n      dry_run: true\n")
    result = dagster_cli("job", "execute", "-m", "hrms_pipelines", "-j", "apply_migrations", "-c", str(dry), env=env, cwd=project_root)
    assert result.returncode == 0, result.stderr[-3000:]
    with psycopg.connect(empty_database_url) as conn:
        assert runner.read_ledger(conn) == {}, "a dry run changes nothing"
        assert conn.execute("SELECT to_regclass('hrms.employees_employee')").fetchone()[0] is None

    result = dagster_cli("job", "execute", "-m", "hrms_pipelines", "-j", "apply_migrations", env=env, cwd=project_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified: nothing pending" in result.stderr
    with psycopg.connect(empty_database_url) as conn:
        ledger = runner.read_ledger(conn)
        assert len(ledger) == len(migrations)
        assert {row.run_id for row in ledger.values()} != {None}


def test_revert_migrations_job_refuses_an_unknown_target(database_url, subprocess_env, project_root, tmp_path):
    config = tmp_path / "revert.yaml"
    config.write_text("ops:\n  revert_to_target:\n    config:\n      app: payroll\n      target: '0042'\n")
    result = dagster_cli("job", "execute", "-m", "hrms_pipelines", "-j", "revert_migrations", "-c", str(config),
                         env=subprocess_env, cwd=project_root)
    assert result.returncode != 0
    assert "unknown target payroll/0042" in result.stdout + result.stderr


def test_revert_and_reapply_one_app_in_process(hrms_db, migrations):
    from hrms_pipelines.migrations.jobs import apply_migrations, revert_migrations

    result = revert_migrations.execute_in_process(
        run_config={"ops": {"revert_to_target": {"config": {"app": "payroll", "target": "0001"}}}},
        resources={"hrms_db": hrms_db},
    )
    assert result.success
    with hrms_db.connection(READER) as conn:
        assert conn.execute("SELECT to_regclass('hrms.payroll_payslipline_component_idx')").fetchone()[0] is None
        assert ("payroll", "0002") not in runner.read_ledger(conn)
    result = apply_migrations.execute_in_process(resources={"hrms_db": hrms_db})
    assert result.success
    with hrms_db.connection(READER) as conn:
        assert conn.execute("SELECT to_regclass('hrms.payroll_payslipline_component_idx')").fetchone()[0] is not None
