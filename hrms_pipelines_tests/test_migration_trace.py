"""Trace mode (issue 13) on real PostgreSQL: each lock rule confirmed by the lock its statement really
takes (and its safe alternative traced safe), rewrites and scans only tracing finds, a flagged
statement tracing shows harmless, CREATE INDEX CONCURRENTLY traced outside a transaction, a failing
migration, and the reports. Every rehearsal runs on the shared scratch cluster under .hrms/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hrms_pipelines.migrations.check import RULES, Options, Severity
from hrms_pipelines.migrations.check.__main__ import main as cli_main
from hrms_pipelines.migrations.trace import cluster as clusters
from hrms_pipelines.migrations.trace import model
from hrms_pipelines.migrations.trace.check import traced_paths

from hrms_pipelines_tests.conftest import TRACE_PGDATA, project_copy  # every test's HRMS_TRACE_PGDATA (conftest.deployment_dirs)


def trace_case(tmp_path: Path, sql: str, setup: str | None = None, **kwargs):
    """The project's migrations, then `setup` and `sql` as two new migrations of app `zz`; both
    rehearsed (with no database every earlier migration counts as applied: the setup's tables exist
    for the case). Returns (report, the case file's path as reports show it)."""
    root = project_copy(tmp_path / "migrations")
    (root / "zz").mkdir()
    paths = []
    for number, text in enumerate((setup or "SELECT 1;\n", sql), start=1):
        header = "-- hrms:depends-on: core/0003, payroll/0003\n" if number == 1 else ""
        path = root / "zz" / f"{number:04d}_{'setup' if number == 1 else 'case'}.up.sql"
        path.write_text(header + text)
        path.with_name(path.name.replace(".up.", ".down.")).write_text("SELECT 1;\n")
        paths.append(path)
    report = traced_paths(paths, migrations_dir=root, **kwargs)
    case = next(f for f in report.files if f.endswith("zz/0002_case.up.sql"))
    return report, case


def case_statements(report, case: str) -> list[model.StatementTrace]:
    return [s for s in report.trace.statements if s.path == case]


# (setup, statement the rule flags, its safe alternative); None: the rule's own bad/good example
LOCK_CASES: dict[str, tuple[str | None, str | None, str | None]] = {
    "adding-required-field": (None, None, None),
    "require-concurrent-index-creation": (None, None, None),
    "changing-column-type": (None, None, None),
    "adding-field-with-default": (None, None, None),
    "constraint-missing-not-valid": (None, None, None),
    "adding-not-nullable-field": (None, None, None),
    "disallowed-unique-constraint": (
        "-- hrms:non-transactional\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS payroll_payrollrecord_ref_idx "
        "ON hrms.payroll_payrollrecord (employee_id, processed_at);\n", None, None),
    "adding-serial-primary-key-field": (
        "CREATE TABLE hrms.zz_note (code text NOT NULL);\n"
        "CREATE UNIQUE INDEX zz_note_code_idx ON hrms.zz_note (code);\n",
        "ALTER TABLE hrms.zz_note ADD COLUMN id bigserial PRIMARY KEY;\n",
        "ALTER TABLE hrms.zz_note ADD CONSTRAINT zz_note_pkey PRIMARY KEY USING INDEX zz_note_code_idx;\n"),
    "require-concurrent-index-deletion": (None, None, None),
    "ban-vacuum-full": (None, None, None),
    "ban-update-or-delete-without-where": (None, None, None),
    "require-concurrent-reindex": (None, None, None),
    "require-concurrent-partition-detach": (
        "CREATE TABLE hrms.zz_event (id bigint, at date) PARTITION BY RANGE (at);\n"
        "CREATE TABLE hrms.zz_event_2020 PARTITION OF hrms.zz_event FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');\n",
        "ALTER TABLE hrms.zz_event DETACH PARTITION hrms.zz_event_2020;\n",
        "-- hrms:non-transactional\n"
        "-- hrms:allow prefer-robust-stmts reason: alone in its file; an interrupted detach is finished with FINALIZE\n"
        "ALTER TABLE hrms.zz_event DETACH PARTITION hrms.zz_event_2020 CONCURRENTLY;\n"),
    "ban-truncate": (None, "TRUNCATE hrms.core_backfillcheckpoint;\n",
                     "DELETE FROM hrms.core_backfillcheckpoint WHERE status = 'completed';\n"),
    "ban-truncate-cascade": (None, "-- hrms:allow ban-truncate reason: the case is about CASCADE\n"
                                   "TRUNCATE hrms.leave_leavetype CASCADE;\n",
                             "DELETE FROM hrms.leave_leavetype WHERE code = 'unused';\n"),
    "ban-alter-domain-with-add-constraint": (
        "CREATE DOMAIN hrms.positive_amount AS numeric;\nCREATE TABLE hrms.zz_amount (v hrms.positive_amount);\n",
        None, None),
}


def test_every_lock_rule_has_a_case():
    assert set(LOCK_CASES) == {r.id for r in RULES.values() if r.predicts is not None}


def batch(root: Path, pick) -> dict[str, str]:
    """Every rule's case as its own migration (app `zz`, after the project's, its setup before it):
    one rehearsal for all of them, each file judged with the earlier ones applied. rule -> case file."""
    project_copy(root)
    (root / "zz").mkdir()
    number, cases = 0, {}
    for rule_id, (setup, bad, good) in sorted(LOCK_CASES.items()):
        for kind, text in (("setup", setup), ("case", pick(RULES[rule_id], bad, good))):
            if text is None:
                continue
            number += 1
            header = "-- hrms:depends-on: core/0003, payroll/0003\n" if number == 1 else ""
            path = root / "zz" / f"{number:04d}_{kind}_{rule_id.replace('-', '_')}.up.sql"
            path.write_text(header + text)
            path.with_name(path.name.replace(".up.", ".down.")).write_text("SELECT 1;\n")
            if kind == "case":
                cases[rule_id] = path
    return cases


@pytest.fixture(scope="module")
def lock_batches(tmp_path_factory):
    """Two rehearsals: every lock rule's flagged statement, and every safe alternative."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(clusters.TRACE_PGDATA_ENV, str(TRACE_PGDATA))
        out = {}
        for kind, pick in (("bad", lambda rule, bad, good: bad or rule.bad),
                           ("good", lambda rule, bad, good: good or rule.good)):
            root = tmp_path_factory.mktemp(kind) / "migrations"
            cases = batch(root, pick)
            report = traced_paths([root / "zz"], migrations_dir=root)
            shown = {rule_id: next(f for f in report.files if f.endswith(path.name)) for rule_id, path in cases.items()}
            out[kind] = (report, shown)
        return out


@pytest.mark.parametrize("rule_id", sorted(LOCK_CASES))
def test_a_lock_rule_is_confirmed_by_the_trace_and_its_safe_alternative_traced_safe(rule_id, lock_batches):
    rule = RULES[rule_id]
    report, cases = lock_batches["bad"]
    case = cases[rule_id]
    assert report.trace.failure is None, report.trace.failure
    flagged = [f for f in report.findings if f.rule == rule_id and f.path == case]
    assert flagged, report.to_text()
    for finding in flagged:
        assert finding.trace and finding.trace["status"] == "confirmed", (finding.trace, report.trace.to_text())
    [statement] = [s for s in case_statements(report, case) if s.line <= flagged[0].line <= s.end_line]
    strongest = statement.strongest_existing()
    assert strongest is not None and strongest.mode in (rule.predicts.lock, *_stronger(rule.predicts.lock))

    report, cases = lock_batches["good"]
    case = cases[rule_id]
    assert report.trace.failure is None, report.trace.failure
    assert not [f for f in report.findings if f.path == case and f.fails(strict=False)], report.to_text()
    assert not [f for f in report.findings if f.path == case and RULES[f.rule].found_by_trace], report.to_text()
    assert case_statements(report, case)
    for statement in case_statements(report, case):
        assert not statement.rewritten and not statement.error, statement
        write_blocking = {lock.relation for lock in statement.on_existing() if "writes" in lock.blocks}
        assert not write_blocking & set(statement.scanned or ()), statement


def _stronger(mode: str) -> tuple[str, ...]:
    from hrms_pipelines.migrations.trace import locks

    return locks.MODES[locks.MODES.index(mode) + 1:]


@pytest.mark.parametrize("rule_id", ["trace-rewrite", "trace-locked-scan", "trace-failed"])
def test_what_only_tracing_finds(rule_id, tmp_path):
    rule = RULES[rule_id]
    report, case = trace_case(tmp_path / "bad", rule.bad)
    found = [f for f in report.findings if f.rule == rule_id]
    assert [(f.path, f.line, f.severity) for f in found] == [(case, 1, Severity.DANGER)], report.to_text()
    assert report.exit_code == 1 and found[0].migration == "zz/0002_case"
    report, case = trace_case(tmp_path / "good", rule.good)
    assert not [f for f in report.findings if f.path == case], report.to_text()


def test_a_rewrite_only_tracing_finds_and_its_suppression(tmp_path):
    sql = "ALTER TABLE hrms.core_backfillcheckpoint SET UNLOGGED;\n"
    report, case = trace_case(tmp_path / "a", sql)
    [finding] = [f for f in report.findings if f.path == case]
    assert finding.rule == "trace-rewrite" and "Rewrote hrms.core_backfillcheckpoint" in finding.message
    [statement] = case_statements(report, case)
    assert "hrms.core_backfillcheckpoint" in statement.rewritten
    allowed = "-- hrms:allow trace-rewrite reason: the table is rebuilt from the archive tonight\n" + sql
    report, case = trace_case(tmp_path / "b", allowed)
    [finding] = [f for f in report.findings if f.path == case]
    assert finding.suppressed == "the table is rebuilt from the archive tonight" and report.exit_code == 0


def test_a_flagged_statement_the_trace_shows_harmless(tmp_path):
    """varchar(n) -> text changes only the catalogue: changing-column-type flags it (DANGER on a large
    table); the trace shows ACCESS EXCLUSIVE for a moment, no rewrite, no scan."""
    setup = "ALTER TABLE hrms.payroll_payslip ADD COLUMN reference varchar(20);\n"
    widen = "ALTER TABLE hrms.payroll_payslip ALTER COLUMN reference TYPE text;\n"
    report, case = trace_case(tmp_path, widen, setup)
    [finding] = [f for f in report.findings if f.path == case]
    assert finding.rule == "changing-column-type" and finding.trace["status"] == "harmless"
    assert finding.severity is Severity.WARNING and "harmless here" in finding.message
    [statement] = case_statements(report, case)
    assert statement.strongest_existing().mode == "AccessExclusiveLock"
    assert statement.rewritten == [] and statement.scanned == []
    assert report.exit_code == 0 and report.to_json()
    # narrowing does rewrite: confirmed
    report, case = trace_case(tmp_path / "narrow", widen.replace("TYPE text", "TYPE varchar(10)"), setup)
    [finding] = [f for f in report.findings if f.path == case]
    assert finding.trace["status"] == "confirmed" and finding.severity is Severity.DANGER


def test_create_index_concurrently_is_traced_outside_a_transaction(tmp_path):
    sql = ("-- hrms:non-transactional\n"
           "CREATE INDEX CONCURRENTLY IF NOT EXISTS payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n")
    report, case = trace_case(tmp_path, sql)
    [statement] = case_statements(report, case)
    assert statement.transaction == model.OUTSIDE_TRANSACTION and statement.error is None
    modes = {(lock.relation, lock.mode) for lock in statement.locks if lock.granted}
    assert ("hrms.payroll_payslip", "ShareUpdateExclusiveLock") in modes
    assert not [lock for lock in statement.on_existing() if "writes" in lock.blocks]
    assert statement.created_indexes == [("hrms.payroll_payslip_status_idx", True)]
    assert not [f for f in report.findings if f.path == case]
    # the same statement in a transactional file fails, and the trace says so at its line
    report, case = trace_case(tmp_path / "tx", sql.replace("-- hrms:non-transactional\n", ""))
    failed = [f for f in report.findings if f.rule == "trace-failed"]
    assert failed and failed[0].path == case and "transaction block" in failed[0].message


def test_a_failing_migration_stops_the_rehearsal_and_the_scratch_database_goes(tmp_path):
    report, case = trace_case(tmp_path, "SELECT 1;\nALTER TABLE hrms.payroll_payslip DROP COLUMN no_such_column;\n")
    [failed] = [f for f in report.findings if f.rule == "trace-failed"]
    assert (failed.path, failed.line) == (case, 2) and "no_such_column" in failed.message
    assert report.trace.failure and report.trace.scratch_dropped
    assert clusters.cluster().databases() == []  # no scratch database left behind


def test_reports_carry_the_lock_table(tmp_path, capsys):
    report, case = trace_case(tmp_path, "ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n")
    text = report.to_text()
    assert "takes ACCESS EXCLUSIVE on hrms.payroll_payslip (~1,000,000 rows): blocks reads, writes and DDL" in text
    data = json.loads(report.to_json())
    [statement] = [s for s in data["trace"]["statements"] if s["path"] == case]
    assert statement["locks"][0]["sql_mode"] == "ACCESS EXCLUSIVE" and "writes" in statement["locks"][0]["blocks"]
    assert data["trace"]["scratch_dropped"] is True
    # the CLI: --trace, text and JSON
    root = tmp_path / "migrations"
    assert cli_main(["--trace", "--json", "--migrations-dir", str(root), str(root / "zz")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert any(s["path"].endswith("zz/0002_case.up.sql") for s in out["trace"]["statements"])


def test_trace_options_select_what_is_rehearsed(tmp_path):
    report, case = trace_case(tmp_path, "ALTER TABLE hrms.org_team ADD COLUMN note text;\n",
                              options=Options(strict=True))
    assert {s.migration for s in report.trace.statements} == {"zz/0001_setup", "zz/0002_case"}
    assert re.match(r"the \d+ migration\(s\) before", report.trace.source)   # however many the project has by then
