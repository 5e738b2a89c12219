"""Differential test against squawk (squawk-cli, a test-only dependency) on our own corpus, for
the rules the two share. Both judge each file as one transaction (squawk's
--assume-in-transaction; our runner's transactional mode), and every table in the corpus already
exists, so both see the same situation. Where the analyzer deliberately differs, the difference
is asserted below, so it cannot drift silently."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hrms_pipelines.migrations.check import RULES, TableSizes, analyze_sql

SQUAWK = shutil.which("squawk", path=str(Path(__file__).resolve().parents[1] / ".venv" / "bin"))
pytestmark = pytest.mark.skipif(SQUAWK is None, reason="squawk-cli is not installed (pip install -e '.[test]')")

SHARED = sorted({r.squawk for r in RULES.values() if r.squawk} - {"require-lock-timeout", "require-statement-timeout"})

# Each entry is a whole file; one statement per line so both tools point at the same line.
CORPUS = {
    "add_required": "ALTER TABLE payroll_payslip ADD COLUMN note text NOT NULL;",
    "add_required_ok": "ALTER TABLE payroll_payslip ADD COLUMN note text NOT NULL DEFAULT 'x';",
    "add_nullable": "ALTER TABLE payroll_payslip ADD COLUMN note text;",
    "drop_column": "ALTER TABLE employees_employee DROP COLUMN job_title;",
    "rename_column": "ALTER TABLE employees_employee RENAME COLUMN job_title TO title;",
    "rename_table": "ALTER TABLE leave_leaverequest RENAME TO leave_request;",
    "drop_table": "DROP TABLE leave_leaverequest;",
    "drop_tables": "DROP TABLE leave_leaverequest, payroll_payslip;",
    "index": "CREATE INDEX payslip_status_idx ON payroll_payslip (status);",
    "unique_index": "CREATE UNIQUE INDEX payslip_ref_idx ON payroll_payslip (employee_id, pay_period_id);",
    "index_new_table": "CREATE TABLE scratch (id bigint, v text);\nCREATE INDEX scratch_v_idx ON scratch (v);",
    "type": "ALTER TABLE payroll_payslipline ALTER COLUMN amount TYPE numeric(18,2);",
    "type_using": "ALTER TABLE payroll_payslipline ALTER COLUMN amount SET DATA TYPE bigint USING amount::bigint;",
    "default_volatile": "ALTER TABLE payroll_payslip ADD COLUMN uid uuid DEFAULT gen_random_uuid();",
    "default_clock": "ALTER TABLE payroll_payslip ADD COLUMN seen timestamptz DEFAULT clock_timestamp();",
    "default_now": "ALTER TABLE payroll_payslip ADD COLUMN seen timestamptz DEFAULT now();",
    "default_const": "ALTER TABLE payroll_payslip ADD COLUMN flag boolean DEFAULT false;",
    "default_cast": "ALTER TABLE payroll_payslip ADD COLUMN tags text[] DEFAULT '{}'::text[];",
    "generated_stored": "ALTER TABLE payroll_payslip ADD COLUMN net2 numeric GENERATED ALWAYS AS (net_pay * 2) STORED;",
    "check": "ALTER TABLE payroll_payslip ADD CONSTRAINT net_pay_check CHECK (net_pay >= 0);",
    "check_not_valid": "ALTER TABLE payroll_payslip ADD CONSTRAINT net_pay_check CHECK (net_pay >= 0) NOT VALID;",
    "fk": "ALTER TABLE payroll_payslip ADD CONSTRAINT payslip_emp_fk FOREIGN KEY (employee_id) REFERENCES employees_employee (id);",
    "fk_not_valid": "ALTER TABLE payroll_payslip ADD CONSTRAINT payslip_emp_fk FOREIGN KEY (employee_id) REFERENCES employees_employee (id) NOT VALID;",
    "validate_same_tx": (
        "ALTER TABLE payroll_payslip ADD CONSTRAINT net_pay_check CHECK (net_pay >= 0) NOT VALID;\n"
        "ALTER TABLE payroll_payslip VALIDATE CONSTRAINT net_pay_check;"
    ),
    "validate_alone": "ALTER TABLE payroll_payslip VALIDATE CONSTRAINT net_pay_check;",
    "check_new_table": "CREATE TABLE scratch (id bigint);\nALTER TABLE scratch ADD CONSTRAINT pos CHECK (id > 0);",
    "set_not_null": "ALTER TABLE employees_employee ALTER COLUMN status SET NOT NULL;",
    "set_not_null_checked": (
        "ALTER TABLE employees_employee ADD CONSTRAINT status_nn CHECK (status IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE employees_employee VALIDATE CONSTRAINT status_nn;\n"
        "ALTER TABLE employees_employee ALTER COLUMN status SET NOT NULL;"
    ),
    "unique": "ALTER TABLE payroll_payrollrecord ADD CONSTRAINT rec_key UNIQUE (employee_id, processed_at);",
    "unique_using_index": "ALTER TABLE payroll_payrollrecord ADD CONSTRAINT rec_key UNIQUE USING INDEX rec_key_idx;",
    "unique_column": "ALTER TABLE payroll_payrollrecord ADD COLUMN ref text UNIQUE;",
    "primary_key": "ALTER TABLE core_backfillcheckpoint ADD PRIMARY KEY (name);",
    "primary_key_using_index": "ALTER TABLE core_backfillcheckpoint ADD CONSTRAINT cp_pkey PRIMARY KEY USING INDEX cp_idx;",
    "drop_index": "DROP INDEX payroll_payslip_period_idx;",
    "drop_index_concurrently": "DROP INDEX CONCURRENTLY IF EXISTS payroll_payslip_period_idx;",
    "cic_in_tx": "SELECT 1;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS payslip_status_idx ON payroll_payslip (status);",
    "begin_commit": "BEGIN;\nALTER TABLE org_team ADD COLUMN note text;\nCOMMIT;",
    "drop_database": "DROP DATABASE hrms_old;",
    "drop_not_null": "ALTER TABLE employees_employee ALTER COLUMN email DROP NOT NULL;",
    "comment": "COMMENT ON TABLE org_team IS 'teams';",
    "dml": "INSERT INTO org_team (code, name) VALUES ('a', 'A');\nUPDATE org_team SET name = 'B' WHERE code = 'a';",
    "multi_action": "ALTER TABLE payroll_payslip ADD COLUMN a text NOT NULL, DROP COLUMN status, ALTER COLUMN net_pay TYPE numeric;",
    # squawk's lock-safety rules added with trace mode (issue 13)
    "reindex_index": "REINDEX INDEX payroll_payslip_period_idx;",
    "reindex_table": "REINDEX TABLE payroll_payslip;",
    "reindex_schema": "REINDEX SCHEMA hrms;",
    "reindex_database": "REINDEX DATABASE hrms;",
    "reindex_system": "REINDEX SYSTEM hrms;",
    "detach": "ALTER TABLE core_auditlog DETACH PARTITION core_auditlog_default;",
    "detach_finalize": "ALTER TABLE core_auditlog DETACH PARTITION core_auditlog_default FINALIZE;",
    "alter_domain": "ALTER DOMAIN positive_amount ADD CONSTRAINT positive CHECK (VALUE > 0);",
    "alter_domain_not_valid": "ALTER DOMAIN positive_amount ADD CONSTRAINT positive CHECK (VALUE > 0) NOT VALID;",
    "alter_domain_not_null": "ALTER DOMAIN positive_amount ADD NOT NULL;",
    "alter_domain_set_not_null": "ALTER DOMAIN positive_amount SET NOT NULL;",
    "alter_domain_validate": "ALTER DOMAIN positive_amount VALIDATE CONSTRAINT positive;",
    "create_domain_check": "CREATE DOMAIN positive_amount AS numeric CHECK (VALUE > 0);",
    "create_domain_named": "CREATE DOMAIN positive_amount AS numeric CONSTRAINT positive CHECK (VALUE > 0);",
    "create_domain_not_null": "CREATE DOMAIN amount AS numeric NOT NULL;",
    "create_domain_default": "CREATE DOMAIN amount AS numeric DEFAULT 0;",
    "create_domain_plain": "CREATE DOMAIN amount AS numeric;",
    "truncate_cascade": "TRUNCATE payroll_payslip CASCADE;",
    "truncate_cascade_only": "TRUNCATE TABLE ONLY payroll_payslip, payroll_payslipline CASCADE;",
    "truncate_restrict": "TRUNCATE payroll_payslip RESTRICT;",
    "robust_in_transaction": "CREATE TABLE scratch (id bigint);\nDROP INDEX payroll_payslip_period_idx;",
}

# Deliberate differences: (file, rule, line) that only one side reports, and why.
ONLY_SQUAWK = {
    # squawk reports an ADD UNIQUE / PRIMARY KEY twice (also as constraint-missing-not-valid, though
    # NOT VALID does not exist for them); the analyzer keeps the finding that names the problem:
    # an index built under an ACCESS EXCLUSIVE lock.
    ("unique", "constraint-missing-not-valid", 1),
    ("primary_key", "constraint-missing-not-valid", 1),
    # DEFAULT and NULL in CREATE DOMAIN are no constraint to validate: nothing about them is hard to
    # change later. squawk counts every clause of the domain.
    ("create_domain_default", "ban-create-domain-with-constraint", 1),
}
ONLY_OURS = {
    # DROP INDEX CONCURRENTLY inside the runner's transaction fails just like CREATE INDEX
    # CONCURRENTLY; squawk only looks at CREATE INDEX, and only in files of several statements.
    ("drop_index_concurrently", "ban-concurrent-index-creation-in-transaction", 1),
}


def squawk_findings(folder: Path) -> set[tuple[str, str, int]]:
    result = subprocess.run(
        [SQUAWK, "--reporter", "json", "--assume-in-transaction", *sorted(str(p) for p in folder.glob("*.sql"))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    return {
        (Path(v["file"]).stem, v["rule_name"], v["line"] + 1)
        for v in json.loads(result.stdout or "[]")
        if v["rule_name"] in SHARED
    }


def our_findings(folder: Path, sizes: TableSizes) -> set[tuple[str, str, int]]:
    found = set()
    for path in sorted(folder.glob("*.sql")):
        for f in analyze_sql(path.read_bytes(), sizes=sizes):
            if f.rule in SHARED:
                found.add((path.stem, f.rule, f.line))
    return found


def test_same_findings_as_squawk_on_shared_rules(tmp_path):
    for name, sql in CORPUS.items():
        (tmp_path / f"{name}.sql").write_text(sql + "\n")
    theirs = squawk_findings(tmp_path)
    ours = our_findings(tmp_path, TableSizes.load())
    assert theirs - ours == ONLY_SQUAWK, sorted(theirs - ours)
    assert ours - theirs == ONLY_OURS, sorted(ours - theirs)
    assert len(theirs & ours) >= 25  # the corpus really exercises the shared rules
    new_rules = {"require-concurrent-reindex", "require-concurrent-partition-detach", "ban-truncate-cascade",
                 "ban-alter-domain-with-add-constraint", "ban-create-domain-with-constraint"}
    assert new_rules <= {rule for _, rule, _ in theirs & ours}


def test_timeout_rules_match_squawk_on_standalone_scripts(tmp_path):
    from hrms_pipelines.migrations.check import engine

    scripts = {
        "no_timeouts": "SELECT 1;\nALTER TABLE org_team ADD COLUMN note text;\nCREATE INDEX i ON org_team (note);",
        "lock_only": "SET lock_timeout = '1s';\nALTER TABLE org_team ADD COLUMN note text;",
        "both": "SET lock_timeout = '1s';\nSET statement_timeout = '5s';\nALTER TABLE org_team ADD COLUMN note text;",
        "create_plain_table": "CREATE TABLE scratch (id bigint);",
        "create_fk_table": "CREATE TABLE scratch (id bigint REFERENCES org_team (id));",
    }
    for name, sql in scripts.items():
        (tmp_path / f"{name}.sql").write_text(sql + "\n")
    rules = {"require-lock-timeout", "require-statement-timeout"}
    result = subprocess.run([SQUAWK, "--reporter", "json", *sorted(str(p) for p in tmp_path.glob("*.sql"))],
                            capture_output=True, text=True, timeout=120)
    theirs = {(Path(v["file"]).stem, v["rule_name"], v["line"] + 1) for v in json.loads(result.stdout or "[]")
              if v["rule_name"] in rules}
    ours = {(p.stem, f.rule, f.line) for p in tmp_path.glob("*.sql")
            for f in analyze_sql(p.read_bytes(), mode=engine.STANDALONE, sizes=TableSizes.load()) if f.rule in rules}
    assert ours == theirs
    assert ("no_timeouts", "require-lock-timeout", 2) in ours


def test_where_the_analyzer_is_more_precise_than_squawk(tmp_path):
    """A non-volatile function of constants as DEFAULT is stored once (no rewrite): squawk flags
    any function call with arguments; the analyzer does not."""
    (tmp_path / "lower.sql").write_text("ALTER TABLE payroll_payslip ADD COLUMN code text DEFAULT lower('X');\n")
    assert ("lower", "adding-field-with-default", 1) in squawk_findings(tmp_path)
    assert our_findings(tmp_path, TableSizes.load()) == set()


# Files that run outside a transaction: a `-- hrms:non-transactional` migration here, squawk without
# --assume-in-transaction. prefer-robust-stmts lives here, and CONCURRENTLY is allowed.
OUTSIDE_TRANSACTION = {
    "add_column": "ALTER TABLE org_team ADD COLUMN note text;",
    "add_column_if_not_exists": "ALTER TABLE org_team ADD COLUMN IF NOT EXISTS note text;",
    "drop_column": "ALTER TABLE org_team DROP COLUMN IF EXISTS note;\nALTER TABLE org_team DROP COLUMN name;",
    "add_constraint": "ALTER TABLE org_team ADD CONSTRAINT code_len CHECK (length(code) < 50) NOT VALID;",
    "validate_after_add": (
        "ALTER TABLE org_team ADD CONSTRAINT code_len CHECK (length(code) < 50) NOT VALID;\n"
        "ALTER TABLE org_team VALIDATE CONSTRAINT code_len;"
    ),
    "drop_then_add": (
        "ALTER TABLE org_team DROP CONSTRAINT IF EXISTS code_len;\n"
        "ALTER TABLE org_team ADD CONSTRAINT code_len CHECK (length(code) < 50) NOT VALID;\n"
        "ALTER TABLE org_team VALIDATE CONSTRAINT code_len;"
    ),
    "add_twice_after_drop": (
        "ALTER TABLE org_team DROP CONSTRAINT IF EXISTS code_len;\n"
        "ALTER TABLE org_team ADD CONSTRAINT code_len CHECK (length(code) < 50) NOT VALID;\n"
        "ALTER TABLE org_team ADD CONSTRAINT code_len CHECK (length(code) < 50) NOT VALID;"
    ),
    "drop_constraint": "ALTER TABLE org_team DROP CONSTRAINT org_team_code_key;",
    "set_default": "ALTER TABLE org_team ALTER COLUMN name SET DEFAULT 'x';",
    "rename_column": "ALTER TABLE org_team RENAME COLUMN name TO title;",
    "set_schema": "ALTER TABLE org_team SET SCHEMA archive;",
    "alter_index": "ALTER INDEX org_team_code_key RENAME TO org_team_code_uniq;",
    "cic": "CREATE INDEX CONCURRENTLY org_team_name_idx ON org_team (name);",
    "cic_robust": "CREATE INDEX CONCURRENTLY IF NOT EXISTS org_team_name_idx ON org_team (name);",
    "cic_unnamed": "CREATE INDEX CONCURRENTLY ON org_team (name);",
    "plain_index": "CREATE INDEX IF NOT EXISTS org_team_name_idx ON org_team (name);",
    "create_table": "CREATE TABLE scratch (id bigint);",
    "create_table_robust": "CREATE TABLE IF NOT EXISTS scratch (id bigint);",
    "create_temp_on_commit_drop": "CREATE TEMP TABLE scratch (id bigint) ON COMMIT DROP;",
    "drops": "DROP INDEX CONCURRENTLY payroll_payslip_period_idx;\nDROP TYPE leave_kind;",
    "drops_robust": "DROP INDEX CONCURRENTLY IF EXISTS payroll_payslip_period_idx;\nDROP TYPE IF EXISTS leave_kind;",
    "in_a_block": "BEGIN;\nALTER TABLE org_team ADD COLUMN note text;\nCOMMIT;\nALTER TABLE org_team ADD COLUMN more text;",
    "reindex_concurrently": "REINDEX INDEX CONCURRENTLY payroll_payslip_period_idx;\nREINDEX (CONCURRENTLY) TABLE org_team;",
    "detach_concurrently": "ALTER TABLE core_auditlog DETACH PARTITION core_auditlog_default CONCURRENTLY;",
}
# REINDEX (CONCURRENTLY false) is squawk's "concurrently": it only looks for the option's name.
ONLY_OURS_OUTSIDE = {("reindex_concurrently_false", "require-concurrent-reindex", 1)}


def test_same_findings_as_squawk_outside_a_transaction(tmp_path):
    from hrms_pipelines.migrations.check import engine

    corpus = {**OUTSIDE_TRANSACTION, "reindex_concurrently_false": "REINDEX (CONCURRENTLY false) TABLE org_team;"}
    for name, sql in corpus.items():
        (tmp_path / f"{name}.sql").write_text(sql + "\n")
    result = subprocess.run([SQUAWK, "--reporter", "json", *sorted(str(p) for p in tmp_path.glob("*.sql"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    theirs = {(Path(v["file"]).stem, v["rule_name"], v["line"] + 1) for v in json.loads(result.stdout or "[]")
              if v["rule_name"] in SHARED}
    sizes = TableSizes.load()
    ours = {(p.stem, f.rule, f.line) for p in tmp_path.glob("*.sql")
            for f in analyze_sql(p.read_bytes(), mode=engine.RUNNER_NON_TRANSACTIONAL, sizes=sizes) if f.rule in SHARED}
    assert theirs - ours == set(), sorted(theirs - ours)
    assert ours - theirs == ONLY_OURS_OUTSIDE, sorted(ours - theirs)
    robust = {(name, line) for name, rule, line in ours if rule == "prefer-robust-stmts"}
    assert {("add_column", 1), ("cic", 1), ("create_table", 1), ("drops", 1), ("drops", 2), ("in_a_block", 4),
            ("add_twice_after_drop", 3), ("detach_concurrently", 1)} <= robust
    assert not {name for name, _ in robust} & {"add_column_if_not_exists", "cic_robust", "cic_unnamed", "drop_then_add",
                                               "create_table_robust", "create_temp_on_commit_drop", "drops_robust"}
