"""The analyzer knows how escalation is written (issue 17): the hostile migrations of issue 17 items 1
and 6, written to look harmless, are DANGER, and no `-- hrms:allow` in the same file changes that;
apply_migrations refuses them, changing nothing."""

from __future__ import annotations

import base64

import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.migrations.check import Severity, TableSizes, analyze_sql
from hrms_pipelines.migrations.jobs import apply_migrations
from hrms_pipelines_tests.conftest import project_copy

SIZES = TableSizes.load()
PAYLOAD = base64.b64encode(b"COPY (SELECT 1) TO PROGRAM 'id > /tmp/owned'").decode()

# Issue 17 item 1: a "reporting helper" schema named like the superuser, an operator that beats
# pg_catalog's for `oid <> regrole`, and the command decoded from base64 in the function body.
ITEM_1 = f"""
-- Reporting helpers: compare owners with role names.
CREATE SCHEMA postgres;
CREATE FUNCTION postgres.owner_differs(oid, regrole) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE convert_from(decode('{PAYLOAD}', 'base64'), 'UTF8');
    RETURN $1 OPERATOR(pg_catalog.<>) $2::oid;
EXCEPTION WHEN OTHERS THEN
    RETURN $1 OPERATOR(pg_catalog.<>) $2::oid;
END
$fn$;
CREATE OPERATOR postgres.<> (LEFTARG = oid, RIGHTARG = regrole, FUNCTION = postgres.owner_differs);
"""

# Issue 17 item 6: the migration grants itself UPDATE/DELETE on the audit log, switches its guard off,
# deletes, switches it back on and revokes.
ITEM_6 = """
-- Housekeeping: remove test entries from the audit log.
GRANT UPDATE, DELETE ON hrms.core_auditlog TO hrms_migrator;
ALTER TABLE hrms.core_auditlog DISABLE TRIGGER hrms_guard_auditlog_rows;
DELETE FROM hrms.core_auditlog WHERE source = 'test';
ALTER TABLE hrms.core_auditlog ENABLE TRIGGER hrms_guard_auditlog_rows;
REVOKE UPDATE, DELETE ON hrms.core_auditlog FROM hrms_migrator;
"""

# The same, written the other ways PostgreSQL allows.
ITEM_6_VARIANTS = [
    ("DROP TRIGGER hrms_guard_auditlog_rows ON hrms.core_auditlog;", "ban-disabling-protected-triggers"),
    ("ALTER TABLE hrms.core_auditlog DISABLE TRIGGER ALL;", "ban-disabling-protected-triggers"),
    ("ALTER TABLE hrms.core_auditlog_default DISABLE TRIGGER USER;", "ban-disabling-protected-triggers"),
    ("ALTER TABLE hrms.core_auditlog ENABLE REPLICA TRIGGER hrms_guard_auditlog_rows;",
     "ban-disabling-protected-triggers"),
    ("ALTER TABLE hrms_meta.migration_ledger DISABLE TRIGGER USER;", "ban-disabling-protected-triggers"),
    ("DROP TRIGGER hrms_guard_importrecord_final ON hrms.imports_importrecord;", "ban-disabling-protected-triggers"),
    ("CREATE OR REPLACE FUNCTION hrms.core_auditlog_append_only() RETURNS trigger LANGUAGE plpgsql "
     "AS $$ BEGIN RETURN NULL; END $$;", "ban-disabling-protected-triggers"),
    ("DROP FUNCTION hrms.core_auditlog_append_only() CASCADE;", "ban-disabling-protected-triggers"),
    ("SELECT query_to_xml(convert_from(decode('U0VMRUNUIDE=', 'base64'), 'UTF8'), true, true, '');",
     "ban-sql-in-strings"),
    ("DO $$ BEGIN PERFORM query_to_xml('SELECT 1', true, true, ''); END $$;", "ban-sql-in-strings"),
    ("SET LOCAL session_replication_role = replica;", "ban-session-replication-role"),
    ("SELECT set_config('session_replication_role', 'replica', true);", "ban-session-replication-role"),
    ("ALTER ROLE hrms_migrator SET session_replication_role = replica;", "ban-session-replication-role"),
    ("DO $$ BEGIN PERFORM set_config('session_replication_role', 'replica', true); END $$;",
     "ban-session-replication-role"),
    ("GRANT TRUNCATE ON hrms.core_auditlog TO hrms_importer;", "ban-grant-on-audit-log"),
    ("GRANT ALL ON hrms.core_auditlog_y2026m01 TO hrms_migrator;", "ban-grant-on-audit-log"),
    ("GRANT DELETE ON ALL TABLES IN SCHEMA hrms TO hrms_restorer;", "ban-grant-on-audit-log"),
    ("GRANT SELECT ON hrms.core_auditlog TO report_tool;", "ban-grant-on-audit-log"),
    ("CREATE SCHEMA AUTHORIZATION hrms_migrator;", "ban-create-schema"),
    ("ALTER SCHEMA hrms RENAME TO postgres;", "ban-create-schema"),
    ("CREATE OPERATOR hrms.= (LEFTARG = name, RIGHTARG = text, FUNCTION = hrms.f);", "ban-create-operator"),
    ("DO $$ DECLARE q text := 'SELECT 1'; BEGIN EXECUTE q; END $$;", "dynamic-sql"),
    ("DO $$ DECLARE t text := 'hrms.org_team'; BEGIN EXECUTE 'ANALYZE ' || t; END $$;", "dynamic-sql"),
    ("DO $$ DECLARE t text := 'hrms.org_team'; BEGIN EXECUTE concat('ANALYZE ', t); END $$;", "dynamic-sql"),
    ("DO $$ DECLARE t text := 'hrms.org_team'; BEGIN EXECUTE format('ANALYZE %s', t); END $$;", "dynamic-sql"),
    ("CREATE FUNCTION hrms.f(q text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; END $$;", "dynamic-sql"),
    ("DO $$ DECLARE t text; BEGIN FOR t IN SELECT 'x; ' || quote_ident('y') LOOP EXECUTE 'ANALYZE ' || t; END LOOP; "
     "END $$;", "dynamic-sql"),
]

# What the project's own migrations write, and other ordinary statements: none of the new rules fires.
ORDINARY = [
    "CREATE SCHEMA IF NOT EXISTS hrms;",
    "CREATE SCHEMA hrms_meta;",
    "GRANT SELECT ON hrms.core_auditlog TO hrms_reader;",
    "GRANT INSERT ON hrms.core_auditlog TO hrms_restorer;",
    "GRANT DELETE ON hrms.core_auditlog_default TO hrms_migrator;",
    "GRANT SELECT ON ALL TABLES IN SCHEMA hrms TO hrms_reader;",
    "GRANT UPDATE, DELETE ON hrms.org_team TO hrms_restorer;",
    "ALTER TABLE hrms.leave_leaverequest DISABLE TRIGGER USER;",
    "ALTER TABLE hrms.core_auditlog ENABLE TRIGGER hrms_guard_auditlog_rows;",
    "SET LOCAL work_mem = '64MB';",
    "RESET session_replication_role;",
    "DO $$ DECLARE s text; BEGIN FOR s IN SELECT format('%I.%I', 'hrms', 'org_team_id_seq') LOOP "
    "EXECUTE format('GRANT USAGE ON SEQUENCE %s TO hrms_restorer', s); END LOOP; END $$;",
    "DO $$ DECLARE part regclass := 'hrms.org_team'; BEGIN EXECUTE format('ANALYZE %s', part); END $$;",
]
NEW_RULES = {"ban-create-schema", "ban-create-operator", "ban-disabling-protected-triggers",
             "ban-session-replication-role", "ban-grant-on-audit-log", "dynamic-sql", "ban-sql-in-strings"}


def danger(sql: str) -> set[str]:
    return {f.rule for f in analyze_sql(sql, sizes=SIZES) if f.severity is Severity.DANGER and f.suppressed is None}


def test_issue_17_item_1_schema_operator_and_decoded_payload_are_danger():
    found = {(f.line, f.rule) for f in analyze_sql(ITEM_1, sizes=SIZES) if f.severity is Severity.DANGER}
    assert found == {(3, "ban-create-schema"), (6, "dynamic-sql"), (12, "ban-create-operator")}, found


def test_issue_17_item_6_audit_log_rewrite_is_danger():
    found = sorted((f.line, f.rule) for f in analyze_sql(ITEM_6, sizes=SIZES) if f.severity is Severity.DANGER)
    assert (3, "ban-grant-on-audit-log") in found and (4, "ban-disabling-protected-triggers") in found, found


@pytest.mark.parametrize(("sql", "rule"), ITEM_6_VARIANTS, ids=[f"{r}:{i}" for i, (_, r) in enumerate(ITEM_6_VARIANTS)])
def test_each_way_of_writing_it_is_danger(sql, rule):
    assert rule in danger(sql + "\n"), sql


@pytest.mark.parametrize("sql", ORDINARY)
def test_ordinary_statements_pass(sql):
    assert {f.rule for f in analyze_sql(sql + "\n", sizes=SIZES)} & NEW_RULES == set(), sql


@pytest.mark.parametrize("sql", [ITEM_1, ITEM_6], ids=["item1", "item6"])
def test_a_suppression_in_the_same_file_changes_nothing(sql):
    allow = "-- hrms:allow " + ", ".join(sorted(NEW_RULES)) + " reason: reviewed, trust me\n"
    assert danger(allow + sql) >= danger(sql) and "suppressed-escalation" in danger(allow + sql)


def test_a_down_file_may_drop_the_guard_its_up_file_made_but_not_switch_one_off():
    from hrms_pipelines.migrations.check import engine

    def down(sql: str) -> set[str]:
        result = engine.analyze_text("x.down.sql", sql.encode(), mode=engine.RUNNER_TRANSACTIONAL, sizes=SIZES,
                                     down=True)
        return {f.rule for f in result.findings}

    assert "ban-disabling-protected-triggers" not in down("DROP TRIGGER hrms_guard_auditlog_rows ON hrms.core_auditlog;\n")
    assert "ban-disabling-protected-triggers" in down("ALTER TABLE hrms.core_auditlog DISABLE TRIGGER ALL;\n")


@pytest.mark.parametrize("sql", [ITEM_1, ITEM_6], ids=["item1", "item6"])
def test_apply_migrations_refuses_them_and_changes_nothing(sql, hrms_db, database_url, tmp_path, monkeypatch):
    root = project_copy(tmp_path / "migrations")
    (root / "payroll" / "0100_housekeeping.up.sql").write_text(sql)
    (root / "payroll" / "0100_housekeeping.down.sql").write_text("SELECT 1;\n")
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (source, action, table_name, row_key) "
                     "VALUES ('test', 'insert', 'x', '1')")
        conn.commit()
        before = conn.execute("SELECT count(*), md5(string_agg(id::text, ',' ORDER BY id)) FROM hrms.core_auditlog"
                              ).fetchone()
    result = apply_migrations.execute_in_process(resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message
    assert "DANGER" in message
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms_meta.migration_ledger WHERE version = '0100'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regnamespace('postgres')").fetchone()[0] is None
        assert conn.execute("SELECT count(*), md5(string_agg(id::text, ',' ORDER BY id)) FROM hrms.core_auditlog"
                            ).fetchone() == before


def test_a_file_in_a_flat_folder_is_linted_on_its_own(tmp_path, capsys):
    """Issue 18 item 4: `check FILE` as squawk is used in CI; the folder above is never taken for a
    migrations root (it holds an unrelated broken file and a folder that is not an app)."""
    from hrms_pipelines.migrations.check.__main__ import main as cli_main

    ci = tmp_path / "ci" / "changes"
    ci.mkdir(parents=True)
    (tmp_path / "ci" / "0001_broken.up.sql").write_text("this is not SQL at all (\n")
    (tmp_path / "ci" / "notes").mkdir()
    (tmp_path / "ci" / "tools").mkdir()
    (tmp_path / "ci" / "tools" / "dump.sql").write_text("-- a schema dump, not a migration\n")
    (tmp_path / "ci" / "notes" / "0002_unrelated.up.sql").write_text("DROP TABLE hrms.org_team;\n")
    ok = ci / "0007_add_note.up.sql"
    ok.write_text("ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n")
    assert cli_main([str(ok)]) == 0
    out = capsys.readouterr()
    assert not any(name in out.out + out.err for name in ("0001_broken", "0002_unrelated", "dump.sql")), out
    bad = ci / "0008_index.up.sql"
    bad.write_text("CREATE INDEX payslip_note_idx ON hrms.payroll_payslip (note);\n")
    assert cli_main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "require-concurrent-index-creation" in out and "0001_broken" not in out
    # a folder of such files, too
    assert cli_main([str(ci)]) == 1
    assert "0001_broken" not in capsys.readouterr().out
