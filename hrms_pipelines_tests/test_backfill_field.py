"""The generic field backfill: checked against the live schema and an allow-list before anything
changes, values bound and converted by PostgreSQL, the filter structured; the `field_backfill` job."""

from __future__ import annotations

import subprocess

import dagster as dg
import psycopg
import pytest
import yaml

from hrms_pipelines.backfills import engine
from hrms_pipelines.backfills.jobs import field_backfill
from hrms_pipelines.backfills.field import FieldBackfillError, FieldSpec, FilterSpec, as_backfill
from hrms_pipelines.backfills.registry import Options, registry

from hrms_pipelines.resources import PinnedDatabase

from .conftest import _url, create_database, drop_database
from .test_backfill_engine import ListLog, add_employees

QUICK = Options(batch_size=4, sleep_seconds=0, target_batch_ms=None, max_active_backends=None, max_lock_wait_ms=None)


def run_field(hrms_db, spec: FieldSpec, **kwargs) -> engine.Result:
    return engine.run(hrms_db, as_backfill(spec), QUICK, log=ListLog(), **kwargs)


def add_staff(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        add_employees(conn, 10, prefix="nodept", hire_date="2018-05-01")
        add_employees(conn, 5, prefix="eng", hire_date="2012-01-01")
        conn.execute("UPDATE hrms.employees_employee SET department_code = 'ENG' WHERE email LIKE 'eng%'")
        add_employees(conn, 3, prefix="ops", status="suspended", hire_date="2020-02-02")
        conn.execute("UPDATE hrms.employees_employee SET department_code = 'OPS' WHERE email LIKE 'ops%'")


@pytest.fixture
def staff(database_url):
    """10 employees without a department, 5 in ENG, 3 suspended in OPS."""
    add_staff(database_url)
    return database_url


@pytest.fixture(scope="module")
def untouched_staff(pg_admin_url, migrated_template):
    """The same staff in one database shared by the bad-input cases (each must leave it as it is)."""
    name = create_database(pg_admin_url, template=migrated_template)
    url = _url(pg_admin_url, name)
    add_staff(url)
    yield url
    drop_database(pg_admin_url, name)


def departments(url: str) -> dict[str | None, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT department_code, count(*) FROM hrms.employees_employee GROUP BY 1").fetchall())


def test_registered_field_backfill_sets_unknown_department_where_null(hrms_db, staff):
    result = engine.run(hrms_db, registry.get("set_department_code_unknown"), QUICK, log=ListLog())
    assert (result.rows_changed, result.batches, result.rows_left) == (10, 3, 0)
    assert departments(staff) == {"UNKNOWN": 10, "ENG": 5, "OPS": 3}
    assert engine.run(hrms_db, registry.get("set_department_code_unknown"), QUICK, log=ListLog(), restart=True).rows_changed == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (FieldSpec("employees.Employee", "department_code", "HR", FilterSpec("status", "in", ["suspended", "on_leave"])),
         {None: 10, "ENG": 5, "HR": 3}),
        (FieldSpec("hrms.employees_employee", "department_code", "OLD", FilterSpec("hire_date", "<", "2015-01-01")),
         {None: 10, "OLD": 5, "OPS": 3}),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("department_code", "!=", "ENG")),
         {None: 10, "ENG": 5, "X": 3}),  # != never matches null, as in SQL
        (FieldSpec("employees_employee", "department_code", "ALL"), {"ALL": 18}),
        (FieldSpec("employees_employee", "department_code", None, FilterSpec("department_code", "is_not_null")),
         {None: 18}),
    ],
    ids=["in", "less-than-date", "not-equal", "no-filter", "set-null"],
)
def test_operators_and_table_spellings(hrms_db, staff, spec, expected):
    run_field(hrms_db, spec)
    assert departments(staff) == expected


def test_values_are_converted_by_postgresql_to_the_column_type(hrms_db, staff):
    result = run_field(hrms_db, FieldSpec("employees_employee", "tenure_years", "2.5", FilterSpec("department_code", "=", "OPS")))
    assert result.rows_changed == 3
    with psycopg.connect(staff) as conn:
        assert conn.execute("SELECT DISTINCT tenure_years::text FROM hrms.employees_employee WHERE department_code = 'OPS'"
                            ).fetchall() == [("2.50",)]
        # and updated_at moved for exactly those rows
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE updated_at > created_at").fetchone()[0] == 3


def test_injection_attempts_are_stored_and_matched_literally(hrms_db, staff):
    evil = "x'); DROP TABLE hrms.employees_employee; --"
    assert run_field(hrms_db, FieldSpec("employees_employee", "department_code", evil,
                                        FilterSpec("department_code", "=", "ENG"))).rows_changed == 5
    assert departments(staff) == {None: 10, evil: 5, "OPS": 3}
    # a filter value that would be a tautology if pasted into SQL matches nothing
    tautology = "OPS' OR '1'='1"
    assert run_field(hrms_db, FieldSpec("employees_employee", "department_code", "HACKED",
                                        FilterSpec("department_code", "=", tautology))).rows_changed == 0
    assert departments(staff) == {None: 10, evil: 5, "OPS": 3}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (FieldSpec("employees_employe", "department_code", "X"),
         "table 'employees_employe' is not one a field backfill may change; allowed tables: discipline_grievancecategory"),
        (FieldSpec("core_useraccount", "is_superuser", "true"), "table 'core_useraccount' is not one a field backfill may change"),
        (FieldSpec("employees_employee; DROP TABLE hrms.org_team", "department_code", "X"), "is not one a field backfill may change"),
        (FieldSpec("employees_employee", "departmentcode", "X"),
         "field backfill of hrms.employees_employee: column 'departmentcode' does not exist; columns: id, email"),
        (FieldSpec("employees_employee", "department_code = 'x' --", "X"), "column <24 characters, sha256 [0-9a-f]{8}> does not exist"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("dept", "is_null")), "filter column 'dept' does not exist"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("department_code", "LIKE", "E%")),
         "filter operator 'LIKE' is not allowed; use one of: =, !=, <, <=, >, >=, is_null, is_not_null, in"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("department_code", "= 'ENG' OR true --", "x")),
         "is not allowed; use one of"),
        (FieldSpec("employees_employee", "tenure_years", "three"),
         r"value 'three' for column tenure_years \(numeric\(5,2\)\) was refused by PostgreSQL: invalid input syntax for type numeric: \"three\""),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("hire_date", ">=", "2020-13-45")),
         "filter value '2020-13-45' for column hire_date \\(date\\) was refused by PostgreSQL: date/time field value out of range"),
        (FieldSpec("employees_employee", "team_id", "12abc"), "invalid input syntax for type bigint: \"12abc\""),
        (FieldSpec("employees_employee", "status", "retired"),
         "setting status = 'retired' would violate constraint employees_employee_status_check"),
        (FieldSpec("employees_employee", "id", "1"), "column 'id' cannot be backfilled"),
        (FieldSpec("employees_employee", "is_placeholder", None), "column is_placeholder is NOT NULL; value null is not allowed"),
        (FieldSpec("employees_employee", "email", "x@example.org"),
         "refused to set employees_employee.email \\(email data\\). Run config is stored by Dagster .* "
         "HRMS_BACKFILL_SENSITIVE_COLUMNS=employees_employee.email"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("email", "=", "kofi@example.org")),
         "refused to filter on by value employees_employee.email"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("department_code", "is_null", "ENG")),
         "filter operator is_null takes no value"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("status", "in", [])), "needs a non-empty list"),
        (FieldSpec("employees_employee", "department_code", "X", FilterSpec("status", "=", None)), "for null use is_null"),
    ],
    ids=["unknown-table", "not-allowed-table", "table-injection", "unknown-column", "column-injection",
         "unknown-filter-column", "operator-like", "operator-injection", "value-type", "filter-value-type", "fk-type",
         "check-constraint", "primary-key", "not-null", "sensitive-column", "sensitive-filter", "is-null-with-value",
         "empty-in", "equals-null"],
)
def test_bad_input_is_refused_before_anything_changes(untouched_staff, spec, message):
    staff = untouched_staff
    with pytest.raises(FieldBackfillError, match=message):
        run_field(PinnedDatabase(location=staff), spec)
    assert departments(staff) == {None: 10, "ENG": 5, "OPS": 3}
    with psycopg.connect(staff) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.core_backfillcheckpoint").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE updated_at > created_at").fetchone()[0] == 0


def test_field_backfill_job_from_the_command_line(staff, subprocess_env, project_root, tmp_path):
    config = tmp_path / "field.yaml"
    config.write_text(yaml.safe_dump({"ops": {"run_field_backfill": {"config": {
        "table": "employees.Employee", "column": "department_code", "value": "UNKNOWN",
        "filter": {"column": "department_code", "operator": "is_null"}, "batch_size": 3, "sleep_seconds": 0}}}}))
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", "field_backfill",
               "-c", str(config)]
    done = subprocess.run(command, env=subprocess_env, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert departments(staff) == {"UNKNOWN": 10, "ENG": 5, "OPS": 3}
    assert "backfill field:employees_employee.department_code:" in done.stderr + done.stdout


def test_field_backfill_job_fails_with_the_reason(hrms_db, staff):
    run_config = {"ops": {"run_field_backfill": {"config": {
        "table": "employees_employee", "column": "hire_date", "value": "last tuesday"}}}}
    with dg.instance_for_test() as instance:
        result = field_backfill.execute_in_process(run_config=run_config, resources={"hrms_db": hrms_db},
                                                   instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "value 'last tuesday' for column hire_date (date) was refused by PostgreSQL" in failure.event_specific_data.error.message
    assert departments(staff) == {None: 10, "ENG": 5, "OPS": 3}
