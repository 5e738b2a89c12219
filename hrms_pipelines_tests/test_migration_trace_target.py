"""Trace mode against a real target (issue 13): tracing never changes it (catalogue and data checksums
before and after identical; no scratch database left, also when the traced migration fails), the
schema comes from the ledger or from pg_dump, and a user's database reached only through
HRMS_DATABASE_URL (a second embedded server) is traced by check_migrations and apply_migrations' dry run."""

from __future__ import annotations

import psycopg
import pytest

import dagster as dg
from hrms_pipelines import settings
from hrms_pipelines.migrations.check import Options
from hrms_pipelines.migrations.check.__main__ import main as cli_main
from hrms_pipelines.migrations.check_job import check_migrations
from hrms_pipelines.migrations.jobs import apply_migrations
from hrms_pipelines.migrations.trace import cluster as clusters
from hrms_pipelines.migrations.trace.check import traced_paths
from hrms_pipelines.resources import HrmsDatabase
from hrms_pipelines_tests.conftest import project_copy

PENDING = ("ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n"
           "CREATE INDEX payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n")
FAILING = "ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\nCOMMENT ON COLUMN hrms.payroll_payslip.nope IS 'x';\n"

CATALOGUE = """
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT format('%s %s %s %s %s %s', c.oid, n.nspname, c.relname, c.relkind, c.relfilenode, c.relacl) AS x
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('hrms', 'hrms_meta', 'public')
  UNION ALL SELECT format('%s %s %s %s %s', a.attrelid, a.attname, a.atttypid, a.attnotnull, a.attisdropped)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('hrms', 'hrms_meta') AND a.attnum > 0
  UNION ALL SELECT format('%s %s %s', conrelid, conname, convalidated) FROM pg_constraint WHERE connamespace = 'hrms'::regnamespace
  UNION ALL SELECT format('%s %s %s', indexrelid, indisvalid, indisready) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  WHERE c.relnamespace = 'hrms'::regnamespace
  UNION ALL SELECT format('%s %s', nspname, nspacl) FROM pg_namespace
  UNION ALL SELECT format('%s %s', datname, datacl) FROM pg_database WHERE datname = current_database()
) catalogue
"""


def checksum(url: str) -> tuple[str, str]:
    """(catalogue, data): what a rehearsal must leave exactly as it was."""
    with psycopg.connect(url) as conn:
        catalogue = conn.execute(CATALOGUE).fetchone()[0]
        tables = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('hrms', 'hrms_meta') AND c.relkind = 'r' ORDER BY 1").fetchall()]
        data = [conn.execute(f"SELECT '{t}' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                             ).fetchone()[0] for t in tables]
    return catalogue, "|".join(data)


def migrations_with(tmp_path, monkeypatch, sql: str):
    root = project_copy(tmp_path / "migrations")
    (root / "payroll" / "0100_note.up.sql").write_text(sql)
    (root / "payroll" / "0100_note.down.sql").write_text("ALTER TABLE hrms.payroll_payslip DROP COLUMN IF EXISTS note;\n")
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    return root


def with_rows(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO hrms.core_backfillcheckpoint (name, status, rows_done) VALUES ('a', 'completed', 7), "
                     "('b', 'running', 3)")


def step_metadata(result, step: str) -> dict:
    event = next(e for e in result.all_events if e.step_key == step and e.event_type_value in ("STEP_OUTPUT", "STEP_FAILURE"))
    if event.event_type_value == "STEP_FAILURE":
        return event.step_failure_data.user_failure_data.metadata
    return {k: v for e in result.all_events if e.step_key == step and e.event_type_value == "STEP_OUTPUT"
            for k, v in e.event_specific_data.metadata.items()}


@pytest.mark.parametrize("sql", [PENDING, FAILING], ids=["pending", "failing"])
def test_tracing_never_changes_the_target(sql, hrms_db, database_url, tmp_path, monkeypatch):
    migrations_with(tmp_path, monkeypatch, sql)
    with_rows(database_url)
    before = checksum(database_url)
    result = check_migrations.execute_in_process(
        run_config={"ops": {"check_migration_files": {"config": {"trace": True}}}},
        resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success  # the non-concurrent index is DANGER; the failing file is trace-failed
    metadata = step_metadata(result, "check_migration_files")
    assert isinstance(metadata["trace_statements"], dg.TableMetadataValue)
    records = [r.data for r in metadata["trace_statements"].records]
    assert records and all(r["statement"].endswith(("0100_note.up.sql:1", "0100_note.up.sql:2")) for r in records)
    assert metadata["trace_scratch_dropped"].value is True
    findings = metadata["findings"].value
    if sql is FAILING:
        assert "trace-failed" in findings and "nope" in findings
    else:
        assert "require-concurrent-index-creation" in findings and "confirmed" in findings
        assert any("SHARE on hrms.payroll_payslip" in r["locks"] and "writes" in r["blocks"] for r in records), records
    assert checksum(database_url) == before
    assert clusters.cluster().databases() == []


def test_the_schema_from_the_ledger_or_from_pg_dump(database_url, tmp_path, monkeypatch):
    root = migrations_with(tmp_path, monkeypatch, PENDING)
    before = checksum(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        replayed = traced_paths([root / "payroll"], migrations_dir=root, conn=conn, options=Options())
        dumped = traced_paths([root / "payroll"], migrations_dir=root, conn=conn, dump_url=database_url,
                              target_display="the test database")
    assert "ledger, replayed" in replayed.trace.source and dumped.trace.source == "pg_dump --schema-only of the test database"
    for report in (replayed, dumped):
        assert report.trace.migrations == ["payroll/0100_note"]  # 0001..0003 are applied already
        [finding] = [f for f in report.findings if f.rule == "require-concurrent-index-creation"]
        assert finding.trace["status"] == "confirmed" and finding.severity.value == "DANGER"
    assert [s.locks for s in replayed.trace.statements] == [s.locks for s in dumped.trace.statements]
    assert checksum(database_url) == before


def test_a_users_database_reached_only_through_hrms_database_url(second_server, migrations, tmp_path, monkeypatch,
                                                                  capsys):
    name = second_server.migrated_database(migrations)
    try:
        migrations_with(tmp_path, monkeypatch, PENDING)
        monkeypatch.setenv(settings.DATABASE_URL_ENV, second_server.location(name))
        with_rows(second_server.url(name))
        before = checksum(second_server.url(name))
        database = HrmsDatabase()  # what Definitions binds: everything from the environment

        checked = check_migrations.execute_in_process(
            run_config={"ops": {"check_migration_files": {"config": {"trace": True, "json": True}}}},
            resources={"hrms_db": database}, raise_on_error=False)
        metadata = step_metadata(checked, "check_migration_files")
        assert "pg_dump --schema-only of" in metadata["trace"].value and "hrms_migrator" in metadata["trace"].value
        assert [r.data["statement"].rsplit("/", 1)[-1] for r in metadata["trace_statements"].records] == [
            "0100_note.up.sql:1", "0100_note.up.sql:2"]

        dry = apply_migrations.execute_in_process(
            run_config={"ops": {"plan_migrations": {"config": {"dry_run": True}}}}, resources={"hrms_db": database})
        assert dry.success  # a dry run reports what a real run would refuse
        safety = step_metadata(dry, "check_migration_safety")
        assert "trace_statements" in safety and safety["refused"].value == 1
        assert any("SHARE on hrms.payroll_payslip" in r.data["locks"] for r in safety["trace_statements"].records)

        # the CLI, given the user's URL
        url = second_server.url(name, user="hrms_migrator")
        assert cli_main(["--trace", "--database", url, "--migrations-dir", str(tmp_path / "migrations"),
                         str(tmp_path / "migrations" / "payroll")]) == 1
        assert "pg_dump --schema-only of" in capsys.readouterr().out

        assert checksum(second_server.url(name)) == before
        assert clusters.cluster().databases() == []
    finally:
        second_server.drop_database(name)
