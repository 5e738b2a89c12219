"""The analyzer's rules: every rule's bad and good example, then the state the engine tracks
(transactions, timeouts, new tables, sizes) and the awkward inputs."""

from __future__ import annotations

import pytest

from hrms_pipelines.migrations.check import RULES, Severity, TableSizes, analyze_sql
from hrms_pipelines.migrations.check import engine
from hrms_pipelines.migrations.check.rules import FILE_LEVEL

SIZES = TableSizes.load()
EXAMPLES = [r for r in RULES.values() if r.bad and r.id not in FILE_LEVEL and not r.found_by_trace]


def rules_of(findings, *, active_only=True):
    return [f.rule for f in findings if not active_only or f.suppressed is None]


@pytest.mark.parametrize("rule", EXAMPLES, ids=lambda r: r.id)
def test_bad_example_triggers_its_rule(rule):
    findings = analyze_sql(rule.bad, sizes=SIZES)
    assert rule.id in rules_of(findings), findings


@pytest.mark.parametrize("rule", EXAMPLES, ids=lambda r: r.id)
def test_good_example_is_clean(rule):
    assert rules_of(analyze_sql(rule.good, sizes=SIZES)) == []


def test_every_rule_documents_why_and_fix():
    for rule in RULES.values():
        assert rule.id == rule.id.lower() and " " not in rule.id
        assert len(rule.why) > 30 and len(rule.fix) > 20, rule.id


def test_seed_table_rows_have_their_severity():
    """The seed's table, on its large tables."""
    cases = {
        "ALTER TABLE hrms.employees_employee ADD COLUMN x text NOT NULL;": ("adding-required-field", Severity.DANGER),
        "ALTER TABLE hrms.employees_employee DROP COLUMN job_title;": ("ban-drop-column", Severity.DANGER),
        "ALTER TABLE hrms.employees_employee RENAME COLUMN job_title TO title;": ("renaming-column", Severity.DANGER),
        "DROP TABLE hrms.leave_leaverequest;": ("ban-drop-table", Severity.DANGER),
        "ALTER TABLE hrms.leave_leaverequest RENAME TO leave_requests;": ("renaming-table", Severity.DANGER),
        "CREATE INDEX i ON hrms.payroll_payslip (status);": ("require-concurrent-index-creation", Severity.DANGER),
        "ALTER TABLE hrms.payroll_payslip ALTER COLUMN status TYPE varchar(20);": ("changing-column-type", Severity.DANGER),
        "TRUNCATE hrms.core_auditlog;": ("ban-truncate", Severity.DANGER),
    }
    for sql, (rule, severity) in cases.items():
        findings = analyze_sql(sql, sizes=SIZES)
        assert [(f.rule, f.severity) for f in findings] == [(rule, severity)], sql


def test_size_decides_severity_and_new_tables_are_exempt():
    big = "CREATE INDEX i ON hrms.payroll_payslipline (amount);"
    small = "CREATE INDEX i ON hrms.org_team (name);"
    fresh = "CREATE TABLE hrms.x (id bigint, v text);\nCREATE INDEX i ON hrms.x (v);"
    assert [(f.rule, f.severity) for f in analyze_sql(big, sizes=SIZES)] == [
        ("require-concurrent-index-creation", Severity.DANGER)]
    assert [(f.rule, f.severity) for f in analyze_sql(small, sizes=SIZES)] == [
        ("require-concurrent-index-creation", Severity.WARNING)]
    assert analyze_sql(fresh, sizes=SIZES) == []
    # tables created by a pending migration (known from the ledger) are new too
    assert analyze_sql(big, sizes=SIZES, new_tables={"hrms.payroll_payslipline"}) == []
    # the threshold is configurable
    low = TableSizes(reference={"hrms.org_team": 500}, threshold=100)
    assert [f.severity for f in analyze_sql(small, sizes=low)] == [Severity.DANGER]


def test_unqualified_names_match_the_reference():
    findings = analyze_sql("ALTER TABLE payroll_payslipline ADD COLUMN u uuid DEFAULT gen_random_uuid();", sizes=SIZES)
    assert [(f.rule, f.severity) for f in findings] == [("adding-field-with-default", Severity.DANGER)]
    assert "5,000,000 rows" in findings[0].message


def test_line_and_column_in_multi_statement_file():
    sql = (
        "-- header\n"
        "CREATE TABLE hrms.t (id bigint);\n"
        "\n"
        "ALTER TABLE hrms.payroll_payslip\n"
        "    ADD COLUMN a text,\n"
        "    ADD COLUMN b text NOT NULL;  DROP TABLE hrms.leave_leaverequest;\n"
        "/* block\n comment */ ALTER TABLE hrms.employees_employee RENAME COLUMN email TO mail;\n"
    )
    found = {f.rule: (f.line, f.column) for f in analyze_sql(sql, sizes=SIZES)}
    assert found == {
        "adding-required-field": (6, 16),
        "ban-drop-table": (6, 34),
        "renaming-column": (8, 13),
    }


def test_columns_count_characters_not_bytes():
    sql = "SELECT 'héllo wörld';\nSELECT 'é'; ALTER TABLE hrms.employees_employee DROP COLUMN email;\n"
    (finding,) = analyze_sql(sql, sizes=SIZES)
    assert (finding.rule, finding.line, finding.column) == ("ban-drop-column", 2, 13)


def test_volatile_defaults():
    def rules(default):
        return rules_of(analyze_sql(f"ALTER TABLE hrms.payroll_payslip ADD COLUMN c timestamptz DEFAULT {default};", sizes=SIZES))

    for volatile in ("clock_timestamp()", "gen_random_uuid()::text::timestamptz", "random() * 10", "my_func()", "nextval('s')"):
        assert rules(volatile) == ["adding-field-with-default"], volatile
    for constant in ("now()", "CURRENT_TIMESTAMP", "'2024-01-01'", "'2024-01-01'::timestamptz", "now() + interval '1 day'"):
        assert rules(constant) == [], constant
    assert rules_of(analyze_sql("ALTER TABLE hrms.payroll_payslip ADD COLUMN n bigserial;", sizes=SIZES)) == [
        "adding-field-with-default"]
    assert rules_of(analyze_sql(
        "ALTER TABLE hrms.payroll_payslip ADD COLUMN t numeric GENERATED ALWAYS AS (net_pay * 2) STORED;", sizes=SIZES
    )) == ["adding-field-with-default"]


def test_concurrently_and_transactions():
    cic = "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON hrms.payroll_payslip (status);\n"
    assert rules_of(analyze_sql(cic, sizes=SIZES)) == ["ban-concurrent-index-creation-in-transaction"]
    assert analyze_sql("-- hrms:non-transactional\n" + cic, sizes=SIZES) == []
    # in a non-transactional file, an explicit BEGIN opens a transaction again
    assert rules_of(analyze_sql("-- hrms:non-transactional\nBEGIN;\n" + cic + "COMMIT;\n", sizes=SIZES)) == [
        "ban-concurrent-index-creation-in-transaction"]
    assert rules_of(analyze_sql("-- hrms:non-transactional\nBEGIN;\nCOMMIT;\n" + cic, sizes=SIZES)) == []
    for other in ("REINDEX INDEX CONCURRENTLY hrms.i;", "VACUUM hrms.core_auditlog;",
                  "ALTER TABLE hrms.core_auditlog DETACH PARTITION hrms.core_auditlog_default CONCURRENTLY;"):
        assert "ban-concurrent-index-creation-in-transaction" in rules_of(analyze_sql(other, sizes=SIZES)), other
        assert "ban-concurrent-index-creation-in-transaction" not in rules_of(
            analyze_sql("-- hrms:non-transactional\n" + other, sizes=SIZES)), other
    # a standalone script is outside a transaction until BEGIN
    assert rules_of(analyze_sql("SET lock_timeout = '5s'; SET statement_timeout = '30s';\n" + cic,
                                mode=engine.STANDALONE, sizes=SIZES)) == []


def test_not_valid_then_validate():
    add = "ALTER TABLE hrms.payroll_payslip ADD CONSTRAINT c CHECK (net_pay >= 0) NOT VALID;\n"
    validate = "ALTER TABLE hrms.payroll_payslip VALIDATE CONSTRAINT c;\n"
    same_transaction = analyze_sql(add + validate, sizes=SIZES)
    assert [(f.rule, f.line) for f in same_transaction] == [("constraint-missing-not-valid", 2)]
    separate = analyze_sql("-- hrms:non-transactional\n" + add + validate, sizes=SIZES)
    # (outside a transaction a re-run would meet the constraint added already: prefer-robust-stmts says so)
    assert set(rules_of(separate)) == {"prefer-robust-stmts"}
    fk = "ALTER TABLE hrms.org_team ADD CONSTRAINT f FOREIGN KEY (tribe_id) REFERENCES hrms.payroll_payslip (id);"
    assert [(f.rule, f.severity) for f in analyze_sql(fk, sizes=SIZES)] == [("constraint-missing-not-valid", Severity.DANGER)]


def test_set_not_null_needs_a_validated_check():
    set_nn = "ALTER TABLE hrms.employees_employee ALTER COLUMN status SET NOT NULL;\n"
    assert rules_of(analyze_sql(set_nn, sizes=SIZES)) == ["adding-not-nullable-field"]
    three_steps = (
        "-- hrms:non-transactional\n"
        "ALTER TABLE hrms.employees_employee ADD CONSTRAINT s_nn CHECK (status IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE hrms.employees_employee VALIDATE CONSTRAINT s_nn;\n" + set_nn
    )
    assert set(rules_of(analyze_sql(three_steps, sizes=SIZES))) == {"prefer-robust-stmts"}
    other_column = three_steps.replace(set_nn, set_nn.replace("status", "email"))
    assert set(rules_of(analyze_sql(other_column, sizes=SIZES))) == {"adding-not-nullable-field", "prefer-robust-stmts"}
    # a check validated by an earlier migration counts (the catalog carries it)
    catalog = engine.Catalog()
    analyze_sql("ALTER TABLE hrms.employees_employee ADD CONSTRAINT s_nn CHECK (status IS NOT NULL);", sizes=SIZES, catalog=catalog)
    assert analyze_sql(set_nn, sizes=SIZES, catalog=catalog) == []


def test_drop_index_finds_its_table_in_earlier_migrations():
    catalog = engine.Catalog()
    analyze_sql("CREATE TABLE hrms.a (id bigint); CREATE INDEX a_idx ON hrms.a (id);\n"
                "CREATE INDEX big_idx ON hrms.payroll_payslipline (id);", sizes=SIZES, catalog=catalog)
    small = analyze_sql("DROP INDEX hrms.a_idx;", sizes=SIZES, catalog=catalog)
    big = analyze_sql("DROP INDEX big_idx;", sizes=SIZES, catalog=catalog)
    assert [(f.rule, f.severity) for f in small] == [("require-concurrent-index-deletion", Severity.WARNING)]
    assert [(f.rule, f.severity) for f in big] == [("require-concurrent-index-deletion", Severity.DANGER)]
    assert analyze_sql("CREATE TABLE hrms.b (id bigint); CREATE INDEX b_idx ON hrms.b (id); DROP INDEX b_idx;", sizes=SIZES) == []


def test_partitioned_table_index_gets_the_on_only_pattern():
    catalog = engine.Catalog()
    analyze_sql("CREATE TABLE hrms.log (id bigint, at timestamptz) PARTITION BY RANGE (at);", sizes=SIZES, catalog=catalog)
    sizes = TableSizes(reference={"hrms.log": 2_000_000})
    (finding,) = analyze_sql("CREATE INDEX log_at ON hrms.log (at);", sizes=sizes, catalog=catalog)
    assert finding.severity is Severity.DANGER and "ON ONLY" in finding.message
    assert analyze_sql("CREATE INDEX log_at ON ONLY hrms.log (at);", sizes=sizes, catalog=catalog) == []


def test_timeouts_runner_versus_standalone():
    ddl = "ALTER TABLE hrms.org_team ADD COLUMN IF NOT EXISTS note text;\n"  # robust: a script may be re-run
    assert analyze_sql(ddl, sizes=SIZES) == []  # the runner sets both timeouts
    standalone = analyze_sql(ddl, mode=engine.STANDALONE, sizes=SIZES)
    assert rules_of(standalone) == ["require-lock-timeout", "require-statement-timeout"]
    set_both = "SET lock_timeout = '10s';\nSET statement_timeout = '30s';\n"
    assert analyze_sql(set_both + ddl, mode=engine.STANDALONE, sizes=SIZES) == []
    # DML is not lock-taking DDL; the first DDL is reported, once
    late = analyze_sql("SELECT 1;\n" + ddl + ddl, mode=engine.STANDALONE, sizes=SIZES)
    assert [(f.rule, f.line) for f in late] == [("require-lock-timeout", 2), ("require-statement-timeout", 2)]
    # turning the runner's timeout off inside a transactional file is caught ...
    for off in ("SET lock_timeout = 0;\n", "SET LOCAL lock_timeout TO '0';\n", "RESET lock_timeout;\n", "RESET ALL;\n"):
        assert "require-lock-timeout" in rules_of(analyze_sql(off + ddl, sizes=SIZES)), off
    # ... but not in a non-transactional one: the runner sets it again before every statement
    assert analyze_sql("-- hrms:non-transactional\nSET lock_timeout = 0;\n" + ddl, sizes=SIZES) == []
    # SET LOCAL outside a transaction does nothing
    assert "require-lock-timeout" in rules_of(analyze_sql("SET LOCAL lock_timeout = '1s';\n" + ddl, mode=engine.STANDALONE, sizes=SIZES))


def test_transaction_control_in_a_runner_file():
    findings = analyze_sql("BEGIN;\nALTER TABLE hrms.org_team ADD COLUMN n text;\nCOMMIT;\n", sizes=SIZES)
    assert [(f.rule, f.line) for f in findings] == [("transaction-nesting", 1), ("transaction-nesting", 3)]
    uncommitted = analyze_sql("BEGIN;\nALTER TABLE hrms.org_team ADD COLUMN n text;\n", mode=engine.STANDALONE, sizes=SIZES)
    assert "ban-uncommitted-transaction" in rules_of(uncommitted)


def test_update_or_delete_without_where():
    assert [(f.rule, f.severity) for f in analyze_sql("DELETE FROM hrms.core_auditlog;", sizes=SIZES)] == [
        ("ban-update-or-delete-without-where", Severity.DANGER)]
    assert [(f.rule, f.severity) for f in analyze_sql("UPDATE hrms.org_team SET name = upper(name);", sizes=SIZES)] == [
        ("ban-update-or-delete-without-where", Severity.WARNING)]
    assert analyze_sql("DELETE FROM hrms.core_auditlog WHERE created_at < '2020-01-01';", sizes=SIZES) == []


def test_unique_and_primary_key_using_index_are_fine():
    for sql in ("ALTER TABLE hrms.payroll_payslip ADD CONSTRAINT u UNIQUE USING INDEX u_idx;",
                "ALTER TABLE hrms.payroll_payslip ADD CONSTRAINT p PRIMARY KEY USING INDEX p_idx;"):
        assert analyze_sql(sql, sizes=SIZES) == []
    assert rules_of(analyze_sql("ALTER TABLE hrms.payroll_payslip ADD COLUMN ref text UNIQUE;", sizes=SIZES)) == [
        "disallowed-unique-constraint"]


def test_down_files_skip_data_loss_rules_but_not_mechanics():
    down = "DROP TABLE hrms.leave_leaverequest;\nALTER TABLE hrms.payroll_payslip DROP COLUMN status;\n"
    result = engine.finalize(engine.analyze_text("x.down.sql", down.encode(), mode=engine.RUNNER_TRANSACTIONAL,
                                                 sizes=SIZES, down=True))
    assert result.findings == []
    cic = b"DROP INDEX CONCURRENTLY IF EXISTS hrms.i;\n"
    result = engine.finalize(engine.analyze_text("x.down.sql", cic, mode=engine.RUNNER_TRANSACTIONAL, sizes=SIZES, down=True))
    assert rules_of(result.findings) == ["ban-concurrent-index-creation-in-transaction"]


# --- awkward input -----------------------------------------------------------------------------


def test_syntax_error_is_a_finding_with_line_and_message():
    (finding,) = analyze_sql("SELECT 1;\n\nALTER TABLE hrms.t ADD COLUMN;\n", sizes=SIZES)
    assert (finding.rule, finding.line, finding.severity) == ("syntax-error", 3, Severity.DANGER)
    assert 'syntax error at or near ";"' in finding.message
    # a suppression in a file that could not be parsed is not reported as unused
    assert [f.rule for f in analyze_sql("-- hrms:allow ban-drop-table reason: x\nDROP TABLE;", sizes=SIZES)] == ["syntax-error"]
    (eof,) = analyze_sql("SELECT (1", sizes=SIZES)
    assert eof.rule == "syntax-error" and "end of input" in eof.message


def test_empty_comment_only_and_non_utf8_files():
    assert analyze_sql("", sizes=SIZES) == []
    assert analyze_sql("   \n-- nothing yet\n/* still nothing */\n", sizes=SIZES) == []
    (finding,) = analyze_sql(b"SELECT 1;\nSELECT '\xff';\n", sizes=SIZES)
    assert (finding.rule, finding.line, finding.column) == ("invalid-encoding", 2, 9)
    assert "byte 18" in finding.message
    # a UTF-8 byte order mark is fine
    assert analyze_sql("\ufeffDROP TABLE hrms.leave_leaverequest;".encode(), sizes=SIZES)[0].column == 1


def test_very_large_file():
    """20,000 statements (~1.5 MB): analyzed whole, the finding at the end on the right line."""
    body = "".join(f"INSERT INTO hrms.org_team (code, name) VALUES ('t{i}', 'Team {i}');\n" for i in range(20_000))
    findings = analyze_sql(body + "DROP TABLE hrms.leave_leaverequest;\n", sizes=SIZES)
    assert [(f.rule, f.line) for f in findings] == [("ban-drop-table", 20_001)]


def test_constraints_written_inline_in_add_column_are_caught_like_add_constraint():
    inline_fk = "ALTER TABLE hrms.payroll_payslipline ADD COLUMN employee_id bigint REFERENCES hrms.employees_employee (id);"
    inline_check = "ALTER TABLE hrms.payroll_payslip ADD COLUMN bonus numeric CHECK (bonus >= 0);"
    inline_unique = "ALTER TABLE hrms.payroll_payslip ADD COLUMN reference text UNIQUE;"
    findings = analyze_sql(inline_fk, sizes=SIZES)
    assert [(f.rule, f.severity) for f in findings] == [("constraint-missing-not-valid", Severity.DANGER)]
    assert "inline in ADD COLUMN" in findings[0].message and "ADD CONSTRAINT ... NOT VALID" in findings[0].message
    assert rules_of(analyze_sql(inline_check, sizes=SIZES)) == ["constraint-missing-not-valid"]
    assert rules_of(analyze_sql(inline_unique, sizes=SIZES)) == ["disallowed-unique-constraint"]
    two_steps = ("ALTER TABLE hrms.payroll_payslipline ADD COLUMN employee_id bigint;\n"
                 "ALTER TABLE hrms.payroll_payslipline ADD CONSTRAINT payslipline_employee_fkey FOREIGN KEY (employee_id) "
                 "REFERENCES hrms.employees_employee (id) NOT VALID;")
    assert rules_of(analyze_sql(two_steps, sizes=SIZES)) == []
