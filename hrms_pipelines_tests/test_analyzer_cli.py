"""The analyzer over migration folders: suppressions, the CLI (exit codes, JSON, --strict, --app,
paths), the project's own migrations, live table sizes from a real database, and the gate in
front of apply_migrations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from hrms_pipelines import settings
from hrms_pipelines.migrations import files
from hrms_pipelines.migrations.check import Options, Severity, TableSizes, analyze_migrations, analyze_paths, analyze_sql
from hrms_pipelines.migrations.check.__main__ import main as cli_main
from hrms_pipelines.migrations.jobs import apply_migrations

SIZES = TableSizes.load()


def tree(root: Path, spec: dict[str, str]) -> Path:
    for name, text in spec.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


BASE = {
    "shop/0001_init.up.sql": "CREATE TABLE public.shop_order (id bigint PRIMARY KEY, status text);\n",
    "shop/0001_init.down.sql": "DROP TABLE public.shop_order;\n",
}


# --- suppressions ------------------------------------------------------------------------------


def test_suppression_with_reason_on_the_statement():
    sql = ("-- hrms:allow ban-drop-table reason: replaced by leave_request, data copied in leave/0007\n"
           "DROP TABLE hrms.leave_leaverequest;\n"
           "DROP TABLE hrms.payroll_payslip;  -- hrms:allow ban-drop-table, ban-truncate reason: archived\n"
           "TRUNCATE hrms.core_auditlog;\n")
    findings = analyze_sql(sql, sizes=SIZES)
    assert [(f.rule, f.line, f.suppressed) for f in findings] == [
        ("ban-drop-table", 2, "replaced by leave_request, data copied in leave/0007"),
        ("ban-drop-table", 3, "archived"),
        ("ban-truncate", 4, None),  # the trailing comment belongs to line 3's statement only
    ]
    assert [f.fails(strict=False) for f in findings] == [False, False, True]


def test_suppression_inside_a_multi_line_statement():
    sql = ("ALTER TABLE hrms.employees_employee\n"
           "    -- hrms:allow ban-drop-column reason: moved to employees_profile in 0009\n"
           "    DROP COLUMN job_title;\n")
    (finding,) = analyze_sql(sql, sizes=SIZES)
    assert finding.suppressed == "moved to employees_profile in 0009"


def test_bad_suppressions_are_reported():
    no_reason = analyze_sql("DROP TABLE hrms.leave_leaverequest; -- hrms:allow ban-drop-table\n", sizes=SIZES)
    assert [(f.rule, f.suppressed) for f in no_reason] == [("ban-drop-table", None), ("suppression-without-reason", None)]
    empty_reason = analyze_sql("-- hrms:allow ban-drop-table reason:\nDROP TABLE hrms.leave_leaverequest;\n", sizes=SIZES)
    assert "suppression-without-reason" in [f.rule for f in empty_reason]
    unused = analyze_sql("-- hrms:allow ban-drop-table reason: old\nSELECT 1;\n", sizes=SIZES)
    assert [(f.rule, f.line) for f in unused] == [("unused-suppression", 1)]
    unknown = analyze_sql("DROP TABLE hrms.x; -- hrms:allow no-such-rule reason: typo\n", sizes=SIZES)
    assert [f.rule for f in unknown] == ["ban-drop-table", "unused-suppression"]
    assert "unknown rule no-such-rule" in unknown[1].message
    # a suppression of one rule leaves the statement's other findings alone
    other = analyze_sql("-- hrms:allow ban-truncate reason: x\nDROP TABLE hrms.leave_leaverequest;\n", sizes=SIZES)
    assert [(f.rule, f.line, f.suppressed) for f in other] == [("unused-suppression", 1, None), ("ban-drop-table", 2, None)]


def test_irreversible_migration_and_its_header_suppression(tmp_path):
    root = tree(tmp_path, {**BASE, "shop/0002_data.up.sql": "INSERT INTO public.shop_order VALUES (1, 'new');\n"})
    report = analyze_paths([], migrations_dir=root)
    assert [(f.rule, f.severity, f.migration) for f in report.findings] == [
        ("irreversible-migration", Severity.WARNING, "shop/0002_data")]
    assert report.exit_code == 0 and analyze_paths([], migrations_dir=root, options=Options(strict=True)).exit_code == 1
    (root / "shop/0002_data.up.sql").write_text(
        "-- hrms:allow irreversible-migration reason: reference rows, nothing to undo\n"
        "INSERT INTO public.shop_order VALUES (1, 'new');\n")
    report = analyze_paths([], migrations_dir=root, options=Options(strict=True))
    assert [(f.rule, f.suppressed) for f in report.findings] == [
        ("irreversible-migration", "reference rows, nothing to undo")]
    assert report.exit_code == 0


# --- migration folders -------------------------------------------------------------------------


def test_project_migrations_pass_strict():
    report = analyze_paths([], options=Options(strict=True))
    assert report.exit_code == 0, report.to_text()
    assert len(report.files) >= 20
    assert all(f.suppressed for f in report.findings), report.to_text()


def test_tables_of_earlier_migrations_are_existing_without_a_database(tmp_path):
    root = tree(tmp_path, {**BASE,
                           "shop/0002_idx.up.sql": "CREATE INDEX shop_order_status_idx ON public.shop_order (status);\n",
                           "shop/0002_idx.down.sql": "DROP INDEX public.shop_order_status_idx;\n"})
    migrations = files.discover(root)
    conservative = analyze_migrations(migrations, sizes=SIZES)
    assert [(f.rule, f.migration) for f in conservative.findings] == [
        ("require-concurrent-index-creation", "shop/0002_idx")]
    # with a ledger, a table of a pending migration is new: nothing to lock
    assert analyze_migrations(migrations, sizes=SIZES, applied=set()).findings == []
    applied = analyze_migrations(migrations, sizes=SIZES, applied={("shop", "0001")})
    assert [f.rule for f in applied.findings] == ["require-concurrent-index-creation"]


def test_app_and_path_selection(tmp_path):
    root = tree(tmp_path, {**BASE,
                           "shop/0002_drop.up.sql": "ALTER TABLE public.shop_order DROP COLUMN status;\n",
                           "shop/0002_drop.down.sql": "ALTER TABLE public.shop_order ADD COLUMN status text;\n",
                           "misc/0001_x.up.sql": "-- hrms:depends-on: shop/0001\nDROP TABLE public.shop_order;\n",
                           "misc/0001_x.down.sql": "SELECT 1;\n"})
    everything = analyze_paths([], migrations_dir=root)
    assert sorted(f.rule for f in everything.failing) == ["ban-drop-column", "ban-drop-table"]
    shop = analyze_paths([], migrations_dir=root, options=Options(app="shop"))
    assert [f.rule for f in shop.failing] == ["ban-drop-column"]
    one = analyze_paths([root / "misc/0001_x.up.sql"], migrations_dir=root)
    assert [f.rule for f in one.failing] == ["ban-drop-table"] and len(one.files) == 2
    app_dir = analyze_paths([root / "shop"], migrations_dir=root)
    assert [f.rule for f in app_dir.failing] == ["ban-drop-column"]


def test_cli_exit_codes_and_outputs(tmp_path, capsys):
    root = tree(tmp_path / "m", BASE)
    assert cli_main(["--migrations-dir", str(root)]) == 0
    assert "ok: 2 file(s)" in capsys.readouterr().out

    tree(root, {"shop/0002_idx.up.sql": "SELECT 1;\n\nCREATE INDEX i ON public.shop_order (status);\n",
                "shop/0002_idx.down.sql": "DROP INDEX public.i;\n"})
    assert cli_main(["--migrations-dir", str(root)]) == 0  # a WARNING on a small table
    assert cli_main(["--migrations-dir", str(root), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "0002_idx.up.sql:3:1: WARNING require-concurrent-index-creation:" in out
    assert "fix: Playbook pattern 1" in out

    assert cli_main(["--migrations-dir", str(root), "--json", "--threshold", "0"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failing"] == 1 and data["danger"] == 1
    finding = data["findings"][0]
    assert {k: finding[k] for k in ("line", "column", "rule", "severity", "migration")} == {
        "line": 3, "column": 1, "rule": "require-concurrent-index-creation", "severity": "DANGER",
        "migration": "shop/0002_idx"}

    assert cli_main(["--migrations-dir", str(root), "--app", "nope"]) == 2
    assert cli_main([str(tmp_path / "missing.sql")]) == 2
    assert "no such file" in capsys.readouterr().err
    tree(tmp_path, {"bad/shop/oops.sql": "SELECT 1;"})
    assert cli_main(["--migrations-dir", str(tmp_path / "bad")]) == 2
    assert "file name must look like" in capsys.readouterr().err


def test_cli_standalone_scripts(tmp_path):
    script = tmp_path / "hotfix.sql"
    script.write_text("ALTER TABLE hrms.org_team ADD COLUMN note text;\n")
    result = subprocess.run([sys.executable, "-m", "hrms_pipelines.migrations.check", "--strict", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "require-lock-timeout" in result.stdout and "hotfix.sql:1:1" in result.stdout
    script.write_text("SET lock_timeout = '10s';\nSET statement_timeout = '30s';\n"
                      "ALTER TABLE hrms.org_team ADD COLUMN IF NOT EXISTS note text;\n")
    result = subprocess.run([sys.executable, "-m", "hrms_pipelines.migrations.check", "--strict", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- a real database ---------------------------------------------------------------------------


def test_live_table_sizes_from_a_real_database(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO hrms.org_organization (code, name) SELECT 'o' || g, 'Org ' || g FROM generate_series(1, 3000) g")
        conn.execute("ANALYZE hrms.org_organization")
        sizes = TableSizes.load(conn=conn, threshold=2000)
        assert 2500 <= sizes.rows("hrms.org_organization") <= 3500
        assert sizes.rows("hrms.payroll_payslipline") == 5_000_000  # the reference wins over an empty table
        assert sizes.is_large("hrms.org_organization") and not sizes.is_large("hrms.org_team")
        sql = "CREATE INDEX org_name_idx ON hrms.org_organization (name);"
        assert [f.severity for f in analyze_sql(sql, sizes=sizes)] == [Severity.DANGER]
        assert [f.severity for f in analyze_sql(sql, sizes=TableSizes.load(threshold=2000))] == [Severity.WARNING]


def test_cli_reads_the_database(database_url, tmp_path, capsys):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO hrms.org_team (code, name) SELECT 't' || g, 'Team ' || g FROM generate_series(1, 1500) g")
        conn.execute("ANALYZE hrms.org_team")
    script = tmp_path / "x.sql"
    script.write_text("SET lock_timeout = '1s'; SET statement_timeout = '1s';\nCREATE INDEX t_idx ON hrms.org_team (name);\n")
    assert cli_main([str(script), "--threshold", "1000"]) == 0  # WARNING: no database, size unknown
    assert cli_main([str(script), "--threshold", "1000", "--database", database_url]) == 1
    out = capsys.readouterr().out
    assert "DANGER require-concurrent-index-creation" in out and "rows, large" in out
    assert cli_main([str(script), "--database", "postgresql://nobody@127.0.0.1:1/none"]) == 2


def test_apply_migrations_refuses_pending_migrations_with_failing_findings(hrms_db, database_url, tmp_path, monkeypatch):
    root = tmp_path / "migrations"
    root.mkdir()
    project = files.discover(Path(__file__).resolve().parents[1] / "sql" / "migrations")
    for m in project:  # the project's migrations (applied already in this database) ...
        for f in (m.up, m.down):
            if f is not None:
                tree(root, {f"{m.app}/{f.path.name}": f.path.read_text()})
    tree(root, {  # ... and two new ones: one unsafe, one fine
        "payroll/0100_status_idx.up.sql": "CREATE INDEX payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
        "payroll/0100_status_idx.down.sql": "DROP INDEX hrms.payroll_payslip_status_idx;\n",
    })
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    config = {"ops": {"plan_migrations": {"config": {}}}}
    result = apply_migrations.execute_in_process(run_config=config, resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "payroll/0100_status_idx" in message and "require-concurrent-index-creation" in message
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('hrms.payroll_payslip_status_idx')").fetchone()[0] is None

    # suppressed with a reason, it goes through
    (root / "payroll/0100_status_idx.up.sql").write_text(
        "-- hrms:allow require-concurrent-index-creation reason: payslips are archived, the table is empty\n"
        "CREATE INDEX payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n")
    result = apply_migrations.execute_in_process(run_config=config, resources={"hrms_db": hrms_db})
    assert result.success
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('hrms.payroll_payslip_status_idx')::text").fetchone()[0] == "hrms.payroll_payslip_status_idx"
