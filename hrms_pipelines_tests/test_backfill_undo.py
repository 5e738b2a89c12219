"""Backfills undone, against the real PostgreSQL: every row a field or registered backfill changed
goes back (the table's checksum is exactly what it was), also after a killed and resumed run, in
both capture modes; rows changed since are reported (values masked) and left alone unless
overwritten; a run is undone once; the undo store is append-only; sensitive values never reach
Dagster's logs or metadata."""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._serdes import serialize_value

from hrms_pipelines.backfills import capture, engine, undo
from hrms_pipelines.backfills.field import SENSITIVE_COLUMNS_ENV, FieldSpec, FilterSpec, as_backfill
from hrms_pipelines.backfills.jobs import field_backfill, undo_backfill
from hrms_pipelines.backfills.registry import BackfillError, BackfillRegistry, Batch, Options, registry
from hrms_pipelines.roles import IMPORTER, READER

from .conftest import as_role
from .test_backfill_engine import ListLog, add_employees, make_payslip_lines

QUICK = Options(batch_size=7, sleep_seconds=0, target_batch_ms=None, max_active_backends=None, max_lock_wait_ms=None)
UNDO_QUICK = QUICK.override(batch_size=1)  # an undo batch: one of the backfill's recorded batches
OLD_SALARIES = ("12345.67", "23456.78", "34567.89")
NEW_SALARY = "98765.43"
CHANGED_SINCE = "55555.55"


def checksum(url: str, table: str) -> tuple[int, str]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM hrms.{table} t"
                            ).fetchone()


def run_undo(hrms_db, **kwargs) -> undo.UndoReport:
    kwargs.setdefault("options", UNDO_QUICK)
    return undo.undo(hrms_db, log=kwargs.pop("log", ListLog()), **kwargs)


def staff(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        add_employees(conn, 20, prefix="nodept", hire_date="2018-05-01")
        add_employees(conn, 6, prefix="eng", hire_date="2012-01-01", status="active")
        conn.execute("UPDATE hrms.employees_employee SET department_code = 'ENG' WHERE email LIKE 'eng%'")
        add_employees(conn, 4, prefix="gone", hire_date="2010-02-01", termination_date="2019-12-31")


@pytest.fixture
def payroll(database_url, monkeypatch):
    """30 payroll records with planted salaries; the deployment allows field backfills of basic_salary."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 30, prefix="paid", status="active")
        conn.execute("INSERT INTO hrms.payroll_payperiod (year, month, starts_on, ends_on) VALUES (2025, 3, '2025-03-01', '2025-03-31')")
        conn.execute(
            """INSERT INTO hrms.payroll_payrollrecord (employee_id, pay_period_id, basic_salary, net_pay)
               SELECT e.id, (SELECT id FROM hrms.payroll_payperiod), (%s::numeric[])[1 + e.id %% 3], 1000
               FROM hrms.employees_employee e ORDER BY e.id""", [list(OLD_SALARIES)])
    monkeypatch.setenv(SENSITIVE_COLUMNS_ENV, "payroll_payrollrecord.basic_salary")
    return database_url


def salary_spec() -> FieldSpec:
    return FieldSpec("payroll_payrollrecord", "basic_salary", NEW_SALARY)


# --- exact restores --------------------------------------------------------------------------

def test_a_field_backfill_undone_restores_the_table_exactly_and_only_once(hrms_db, database_url):
    staff(database_url)
    before = checksum(database_url, "employees_employee")
    spec = FieldSpec("employees_employee", "department_code", "UNKNOWN", FilterSpec("department_code", "is_null"))
    done = engine.run(hrms_db, as_backfill(spec), QUICK, log=ListLog())
    assert done.rows_changed == 24 and checksum(database_url, "employees_employee") != before

    log = ListLog()
    report = run_undo(hrms_db, backfill=spec.checkpoint_name(), log=log)
    assert checksum(database_url, "employees_employee") == before
    assert (report.total("restored"), report.total("changed"), report.runs[0].status) == (24, 0, "undone")
    assert report.runs[0].rewound
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*), sum((after->>'rows_restored')::int) FROM hrms.core_auditlog "
                            "WHERE action = 'undo' AND source = %s", [f"undo:{spec.checkpoint_name()}"]).fetchone() == (4, 24)
        run = conn.execute("SELECT undone_by, undo_summary->>'rows_restored' FROM hrms.core_backfillrun").fetchone()
        assert run[0] == report.undo_run_id and run[1] == "24"
        # the checkpoint is back where the run started: a new launch applies the backfill again
        assert conn.execute("SELECT status, last_key, rows_done FROM hrms.core_backfillcheckpoint WHERE name = %s",
                            [spec.checkpoint_name()]).fetchone() == ("undone", None, 0)

    with pytest.raises(undo.UndoError, match="is already undone .* a run is undone once"):
        run_undo(hrms_db, backfill=spec.checkpoint_name())
    with pytest.raises(undo.UndoError, match="already undone"):
        run_undo(hrms_db, run_id=done.run_id)
    assert checksum(database_url, "employees_employee") == before
    assert engine.run(hrms_db, as_backfill(spec), QUICK, log=ListLog()).rows_changed == 24


@pytest.mark.parametrize("returning_old", [True, False], ids=["returning-old", "snapshot-join"])
def test_registered_backfills_undone_restore_their_tables_exactly(hrms_db, database_url, monkeypatch, returning_old):
    if not returning_old:  # the path of PostgreSQL before 18, on this server
        monkeypatch.setattr(capture, "RETURNING_OLD_VERSION", 10**9)
    staff(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        make_payslip_lines(conn, 300)
        conn.execute("UPDATE hrms.payroll_payslipline SET line_total = 1 WHERE id % 10 = 0")
    employees, lines = checksum(database_url, "employees_employee"), checksum(database_url, "payroll_payslipline")

    for name in ("set_employee_status", "compute_employee_tenure", "compute_payslipline_line_total"):
        assert engine.run(hrms_db, registry.get(name), QUICK.override(batch_size=50), log=ListLog()).rows_changed > 0
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.payroll_payslipline WHERE line_total IS NULL").fetchone()[0] == 0
        images = dict(conn.execute("SELECT r.backfill, count(DISTINCT v.row_key) FROM hrms.core_backfillrun r "
                                   "JOIN hrms.core_backfillundo_rows v ON v.run_ref = r.id GROUP BY 1").fetchall())
        # the columns each SET list assigns, read by the parser: updated_at too, where the backfill sets it
        keys = {r[0] for r in conn.execute("SELECT DISTINCT column_name FROM hrms.core_backfillundo_rows")}
    assert images == {"set_employee_status": 25, "compute_employee_tenure": 30, "compute_payslipline_line_total": 270}
    assert keys == {"status", "updated_at", "tenure_years", "line_total"}

    for name in ("compute_payslipline_line_total", "compute_employee_tenure", "set_employee_status"):
        assert run_undo(hrms_db, backfill=name).total("changed") == 0
    assert checksum(database_url, "employees_employee") == employees
    assert checksum(database_url, "payroll_payslipline") == lines


def test_a_killed_then_resumed_backfill_undone_restores_the_table(hrms_db, database_url):
    """The process dies inside a batch (after its UPDATE ran): that batch rolls back with its images;
    the relaunch resumes after the last committed batch; undoing the backfill undoes both runs."""
    staff(database_url)
    before = checksum(database_url, "employees_employee")
    own = BackfillRegistry()
    calls = {"n": 0}

    @own.backfill("bump_tenure", table="employees_employee", description="tenure + 1, checkpoint-guarded", pending=None)
    def bump_tenure(batch: Batch) -> int:
        changed = batch.update("tenure_years = coalesce(tenure_years, 0) + 1, updated_at = now()")
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # what a SIGTERM does to a run: the open batch is rolled back
        return changed

    with pytest.raises(KeyboardInterrupt):
        engine.run(hrms_db, own.get("bump_tenure"), QUICK, log=ListLog(), run_id="first")
    with psycopg.connect(database_url) as conn:
        # two batches of 7, recorded one row each
        assert conn.execute("SELECT count(*), sum(cardinality(keys)) FROM hrms.core_backfillundo").fetchone() == (2, 14)
        assert conn.execute("SELECT status, rows_done FROM hrms.core_backfillcheckpoint").fetchone() == ("failed", 14)
    resumed = engine.run(hrms_db, own.get("bump_tenure"), QUICK, log=ListLog(), run_id="second")
    assert (resumed.rows_changed, resumed.resumed_from_key is not None) == (16, True)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE tenure_years = 1").fetchone()[0] == 30

    report = run_undo(hrms_db, backfill="bump_tenure")
    assert [(r.run.run_id, r.restored) for r in report.runs] == [("second", 16), ("first", 14)]
    assert checksum(database_url, "employees_employee") == before


def test_rows_changed_by_two_updates_of_one_batch_and_by_a_trigger_go_back_too(hrms_db, database_url):
    staff(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # a trigger that derives a column the SET lists do not name: the capture records whole rows
        conn.execute("""CREATE FUNCTION hrms.test_title() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN IF NEW.department_code IS NOT NULL THEN NEW.job_title := 'Dept ' || NEW.department_code; END IF;
                        RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER test_title BEFORE UPDATE ON hrms.employees_employee FOR EACH ROW "
                     "EXECUTE FUNCTION hrms.test_title()")
    before = checksum(database_url, "employees_employee")
    own = BackfillRegistry()

    @own.backfill("two_steps", table="employees_employee", description="two updates of the same rows",
                  pending="department_code IS NULL")
    def two_steps(batch: Batch) -> int:
        first = batch.update("job_title = 'Analyst', tenure_years = 1")
        batch.update("department_code = 'TMP', tenure_years = 3")
        return first

    assert engine.run(hrms_db, own.get("two_steps"), QUICK, log=ListLog()).rows_changed == 24
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE job_title = 'Dept TMP'").fetchone()[0] == 24
        assert conn.execute("SELECT count(*), count(DISTINCT row_key) FROM "
                            "(SELECT DISTINCT step, row_key FROM hrms.core_backfillundo_rows) s").fetchone() == (48, 24)
    assert run_undo(hrms_db, backfill="two_steps").total("restored") == 24
    assert checksum(database_url, "employees_employee") == before


# --- rows changed since ------------------------------------------------------------------------

def change_since(url: str) -> dict[str, int]:
    """After the salary backfill: one row changed by someone else, one set back to its old value."""
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM hrms.payroll_payrollrecord ORDER BY id LIMIT 2")]
        conn.execute("UPDATE hrms.payroll_payrollrecord SET basic_salary = %s WHERE id = %s", [CHANGED_SINCE, ids[0]])
        conn.execute("""UPDATE hrms.payroll_payrollrecord r SET basic_salary = v.before::numeric
                        FROM hrms.core_backfillundo_rows v
                        WHERE v.row_key = r.id AND v.column_name = 'basic_salary' AND r.id = %s""", [ids[1]])
    return {"changed": ids[0], "already": ids[1]}


def salaries(url: str) -> dict[int, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT id, basic_salary::text FROM hrms.payroll_payrollrecord ORDER BY id").fetchall())


def test_rows_changed_since_are_reported_masked_and_left_alone(hrms_db, payroll):
    original = salaries(payroll)
    done = engine.run(hrms_db, as_backfill(salary_spec()), QUICK, log=ListLog())
    assert done.rows_changed == 30
    rows = change_since(payroll)

    preview = run_undo(hrms_db, run_id=done.run_id, dry_run=True)
    counts = {name: preview.total(name) for name in ("restored", "already", "changed", "missing")}
    assert counts == {"restored": 28, "already": 1, "changed": 1, "missing": 0}
    assert preview.changed_rows == [["changed since", done.run_id, rows["changed"], "basic_salary", "#####.##", "#####.##", "#####.##"]]
    assert len(preview.sample_rows) == 10 and salaries(payroll)[rows["changed"]] == CHANGED_SINCE  # nothing changed
    with psycopg.connect(payroll) as conn:
        assert conn.execute("SELECT undone_at FROM hrms.core_backfillrun").fetchone()[0] is None

    log = ListLog()
    report = run_undo(hrms_db, run_id=done.run_id, log=log)
    assert (report.total("restored"), report.total("already"), report.total("changed")) == (28, 1, 1)
    now = salaries(payroll)
    assert now[rows["changed"]] == CHANGED_SINCE
    assert {k: v for k, v in now.items() if k != rows["changed"]} == {k: v for k, v in original.items() if k != rows["changed"]}
    assert "1 rows changed since the backfill were left with their current values" in log.text()
    for value in (*OLD_SALARIES, NEW_SALARY, CHANGED_SINCE):
        assert value not in log.text() and value not in serialize_value([report.figures(), report.tables()])
    with psycopg.connect(payroll) as conn:
        keys = conn.execute("SELECT after->'rows_changed_since_left' FROM hrms.core_auditlog WHERE action = 'undo' "
                            "AND after->'rows_changed_since_left' <> '[]'").fetchall()
        assert keys == [([rows["changed"]],)]


def test_overwrite_changed_puts_them_back_too_and_keeps_what_it_overwrote_in_the_audit_log(hrms_db, payroll):
    original = salaries(payroll)
    done = engine.run(hrms_db, as_backfill(salary_spec()), QUICK, log=ListLog())
    rows = change_since(payroll)
    report = run_undo(hrms_db, backfill=done.name, overwrite_changed=True)
    assert (report.total("restored"), report.total("overwritten"), report.total("changed")) == (29, 1, 0)
    assert salaries(payroll) == original
    with psycopg.connect(payroll) as conn:
        audit = conn.execute("SELECT row_key, before->>'basic_salary', after->>'basic_salary' FROM hrms.core_auditlog "
                             "WHERE action = 'undo' AND row_key NOT LIKE 'id %%'").fetchall()
    assert audit == [(str(rows["changed"]), CHANGED_SINCE, original[rows["changed"]])]


# --- guards ------------------------------------------------------------------------------------

def test_an_unfinished_undo_blocks_the_backfill_and_a_launch_resumes_it(hrms_db, database_url):
    staff(database_url)
    before = checksum(database_url, "employees_employee")
    backfill = registry.get("set_employee_status")
    engine.run(hrms_db, backfill, QUICK, log=ListLog())
    partial = run_undo(hrms_db, backfill="set_employee_status", options=UNDO_QUICK.override(max_batches=2))
    assert (partial.runs[0].status, partial.total("restored")) == ("stopped", 14)
    with pytest.raises(BackfillError, match="the undo of its run .* has started and not finished; launch undo_backfill again"):
        engine.run(hrms_db, backfill, QUICK, log=ListLog())
    rest = run_undo(hrms_db, backfill="set_employee_status")
    assert (rest.runs[0].status, rest.total("restored")) == ("undone", 10)
    assert checksum(database_url, "employees_employee") == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT undo_summary->>'rows_restored_all_launches' FROM hrms.core_backfillrun").fetchone() == ("24",)
    assert engine.run(hrms_db, backfill, QUICK, log=ListLog()).rows_changed == 24


def test_undoing_an_older_run_leaves_the_later_ones_and_the_checkpoint(hrms_db, database_url):
    staff(database_url)
    spec = FieldSpec("employees_employee", "department_code", "UNKNOWN", FilterSpec("department_code", "is_null"))
    first = engine.run(hrms_db, as_backfill(spec), QUICK.override(max_batches=1), log=ListLog())
    second = engine.run(hrms_db, as_backfill(spec), QUICK, log=ListLog())
    report = run_undo(hrms_db, run_id=first.run_id)
    assert [(r.run.run_id, r.restored, r.rewound) for r in report.runs] == [(first.run_id, 7, False)]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE department_code = 'UNKNOWN'").fetchone()[0] == 17
        assert conn.execute("SELECT status FROM hrms.core_backfillcheckpoint").fetchone()[0] == "completed"
    assert [r.run.run_id for r in run_undo(hrms_db, backfill=spec.checkpoint_name()).runs] == [second.run_id]


def test_changes_outside_batch_update_are_refused_and_nothing_is_kept(hrms_db, database_url):
    staff(database_url)
    before = checksum(database_url, "employees_employee")
    own = BackfillRegistry()

    @own.backfill("sneaky", table="employees_employee", description="bypasses batch.update", pending="status IS NULL")
    def sneaky(batch: Batch) -> int:
        return batch.conn.execute("UPDATE hrms.employees_employee SET status = 'active' WHERE id BETWEEN %s AND %s "
                                  "AND status IS NULL", [batch.first_key, batch.last_key]).rowcount

    with pytest.raises(BackfillError, match="only 0 went through batch.update, which records what it changes for undo"):
        engine.run(hrms_db, own.get("sneaky"), QUICK, log=ListLog())
    assert checksum(database_url, "employees_employee") == before
    with pytest.raises(capture.CaptureError, match="changes the key id"):
        own.backfill("rekey", table="employees_employee", description="d", pending=None)(
            lambda batch: batch.update("id = id + 1000"))
        engine.run(hrms_db, own.get("rekey"), QUICK, log=ListLog())
    assert checksum(database_url, "employees_employee") == before


def test_nothing_to_undo_is_said_clearly(hrms_db, database_url):
    with pytest.raises(undo.UndoError, match="needs the backfill .* or a run id"):
        run_undo(hrms_db, backfill=None, run_id=" ")
    with pytest.raises(undo.UndoError, match="no recorded run of backfill set_employee_status: nothing to undo"):
        run_undo(hrms_db, backfill="set_employee_status")


def test_the_undo_records_are_append_only_and_a_mark_is_final(hrms_db, database_url):
    staff(database_url)
    engine.run(hrms_db, registry.get("set_employee_status"), QUICK, log=ListLog())
    importer = as_role(database_url, IMPORTER)
    for statement in ("UPDATE hrms.core_backfillundo SET before = after", "DELETE FROM hrms.core_backfillundo",
                      "TRUNCATE hrms.core_backfillundo", "DELETE FROM hrms.core_backfillrun",
                      "UPDATE hrms.core_backfillrun SET from_key = 0"):
        with psycopg.connect(importer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    run_undo(hrms_db, backfill="set_employee_status")
    with psycopg.connect(importer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot change again"):
        conn.execute("UPDATE hrms.core_backfillrun SET undone_at = NULL, undone_by = NULL")
    with psycopg.connect(as_role(database_url, READER)) as conn:
        assert conn.execute("SELECT count(DISTINCT row_key) FROM hrms.core_backfillundo_rows").fetchone()[0] == 24
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO hrms.core_backfillundo (run_ref, batch_key, step, columns, keys, before, after) "
                         "VALUES (1, 1, 0, '{x}', '{1}', '{a}', '{b}')")


# --- through Dagster: what reaches its logs and metadata ---------------------------------------

def dagster_text(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Everything Dagster stored about the run's events (logs, step output metadata, failures)."""
    return "\n".join(serialize_value(entry) for entry in instance.all_logs(result.run_id))


def step_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def test_sensitive_values_never_reach_dagsters_logs_or_metadata(hrms_db, payroll):
    original = salaries(payroll)
    spec = {"table": "payroll_payrollrecord", "column": "basic_salary", "value": NEW_SALARY, "batch_size": 7,
            "sleep_seconds": 0}
    with dg.instance_for_test() as instance:
        done = field_backfill.execute_in_process(run_config={"ops": {"run_field_backfill": {"config": spec}}},
                                                 resources={"hrms_db": hrms_db}, instance=instance)
        assert done.success and step_metadata(done)["rows_changed"] == 30
        name = step_metadata(done)["backfill"]
        assert done.run_id in str(step_metadata(done)["undo_with"])
        change_since(payroll)
        undo_config = {"backfill": name, "run_id": done.run_id, "batch_size": 7, "sleep_seconds": 0}
        preview = undo_backfill.execute_in_process(
            run_config={"ops": {"run_undo": {"config": {**undo_config, "dry_run": True}}}},
            resources={"hrms_db": hrms_db}, instance=instance)
        undone = undo_backfill.execute_in_process(run_config={"ops": {"run_undo": {"config": undo_config}}},
                                                  resources={"hrms_db": hrms_db}, instance=instance)
        again = undo_backfill.execute_in_process(run_config={"ops": {"run_undo": {"config": undo_config}}},
                                                 resources={"hrms_db": hrms_db}, instance=instance, raise_on_error=False)
        # a value PostgreSQL refuses: its message would quote it
        bad = field_backfill.execute_in_process(
            run_config={"ops": {"run_field_backfill": {"config": {**spec, "value": "98765,43x"}}}},
            resources={"hrms_db": hrms_db}, instance=instance, raise_on_error=False)
        texts = {run: dagster_text(instance, run) for run in (done, preview, undone, again, bad)}

    assert preview.success and undone.success and not again.success and not bad.success
    assert step_metadata(preview)["rows_to_restore"] == 28 and step_metadata(undone)["rows_restored"] == 28
    assert "#####.##" in str(step_metadata(undone)["rows_changed_since_examples"])  # reported, masked
    assert "already undone" in texts[again]
    assert "28 rows of hrms.payroll_payrollrecord restored" in texts[undone]  # the scan reads the logs themselves
    assert "value '#####,##x' for column basic_salary (numeric(14,2)) was refused by PostgreSQL" in texts[bad]
    for text in texts.values():
        for planted in (*OLD_SALARIES, NEW_SALARY, CHANGED_SINCE, "98765,43x", *(v for v in original.values())):
            assert planted not in text
    after = salaries(payroll)
    assert sum(after[k] != v for k, v in original.items()) == 1  # the row changed since, left alone


def test_pay_amounts_a_registered_backfill_wrote_are_masked_in_the_report(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        make_payslip_lines(conn, 30)
    engine.run(hrms_db, registry.get("compute_payslipline_line_total"), QUICK, log=ListLog())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE hrms.payroll_payslipline SET line_total = 76543.21 WHERE id = (SELECT min(id) FROM hrms.payroll_payslipline)")
    report = run_undo(hrms_db, backfill="compute_payslipline_line_total")
    [row] = report.changed_rows
    assert row[3:] == ["line_total", None, "##.##", "#####.##"]  # was NULL; the backfill wrote 10.70; now 76543.21
    assert "76543.21" not in serialize_value([report.figures(), report.tables()])


def test_undo_from_the_command_line(database_url, subprocess_env, project_root, tmp_path):
    staff(database_url)
    before = checksum(database_url, "employees_employee")
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines"]

    def execute(*args: str) -> str:
        done = subprocess.run([*command, *args], env=subprocess_env, cwd=project_root, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    execute("-j", "data_backfill", "--tags", json.dumps({"dagster/partition": "set_employee_status"}))
    assert checksum(database_url, "employees_employee") != before
    preview = execute("-j", "undo_backfill", "-c", "config/undo_backfill_dry_run.yaml")
    assert "24 rows of hrms.employees_employee would be restored" in preview
    config = tmp_path / "undo.yaml"
    config.write_text(yaml.safe_dump({"ops": {"run_undo": {"config": {"backfill": "set_employee_status"}}}}))
    assert "24 rows of hrms.employees_employee restored" in execute("-j", "undo_backfill", "-c", str(config))
    assert checksum(database_url, "employees_employee") == before


def test_a_row_whose_other_columns_changed_since_is_still_undone_column_by_column(hrms_db, database_url):
    """The application changed another column of a row (and its updated_at) after the backfill: the
    undo puts back the column the backfill wrote and leaves the application's columns, updated_at
    included; only a row where the backfill's own column changed since is refused. Untouched rows get
    their updated_at back too."""
    staff(database_url)
    with psycopg.connect(database_url) as conn:
        original = dict(conn.execute("SELECT id, (status, hire_date, updated_at)::text FROM hrms.employees_employee").fetchall())
    done = engine.run(hrms_db, registry.get("set_employee_status"), QUICK, log=ListLog())
    assert done.rows_changed == 24
    with psycopg.connect(database_url, autocommit=True) as conn:
        other, own = [r[0] for r in conn.execute(
            "SELECT id FROM hrms.employees_employee WHERE email LIKE 'nodept%' ORDER BY id LIMIT 2")]
        conn.execute("UPDATE hrms.employees_employee SET hire_date = date '2019-09-09', "
                     "updated_at = timestamptz '2030-01-01 00:00+00' WHERE id = %s", [other])
        conn.execute("UPDATE hrms.employees_employee SET status = 'suspended', updated_at = now() WHERE id = %s", [own])

    preview = run_undo(hrms_db, run_id=done.run_id, dry_run=True)
    assert (preview.total("restored"), preview.total("changed")) == (23, 1)
    report = run_undo(hrms_db, run_id=done.run_id)
    assert (report.total("restored"), report.total("changed"), report.total("already")) == (23, 1, 0)
    with psycopg.connect(database_url) as conn:
        now = dict(conn.execute("SELECT id, (status, hire_date, updated_at)::text FROM hrms.employees_employee").fetchall())
        assert conn.execute("SELECT status, hire_date::text, updated_at = timestamptz '2030-01-01 00:00+00' "
                            "FROM hrms.employees_employee WHERE id = %s", [other]).fetchone() == (None, "2019-09-09", True)
        assert conn.execute("SELECT status FROM hrms.employees_employee WHERE id = %s", [own]).fetchone()[0] == "suspended"
    assert {k: v for k, v in now.items() if k not in (other, own)} == {k: v for k, v in original.items() if k not in (other, own)}
