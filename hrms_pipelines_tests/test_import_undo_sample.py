"""Undo of `make demo`'s own import (seeds/sample with the nightly schedule's options, through the
import assets and the undo_import job): every row the run inserted goes, whatever stage inserted it,
every HR table is back to its state before the run, and the same files import again after it."""

import dagster as dg
import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.imports import assets, checks, undo
from hrms_pipelines.imports.jobs import undo_import
from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
from hrms_pipelines.imports.schedules import NIGHTLY_OPTIONS
from hrms_pipelines.resources import RESTORER
from hrms_pipelines.seeding.jobs import seed_environment

from .import_helpers import DATA_TABLES, checksums, import_folder, scalar

HR_TABLES = [t for t in DATA_TABLES if t != "core_auditlog"]
SAMPLE = settings.PROJECT_ROOT / "seeds" / "sample"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HRMS_HOME", str(tmp_path / "home"))


def demo_import(hrms_db) -> str:
    """hrms_import's assets on the sample company, as the nightly schedule runs them; the run id."""
    with import_folder(SAMPLE):
        result = dg.materialize([*assets.import_assets, *checks.import_checks],
                                resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions(**NIGHTLY_OPTIONS)},
                                instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return result.run_id


def undo_job(hrms_db, run_id, dry_run):
    config = {"ops": {"undo_import_run": {"config": {"run_id": run_id, "dry_run": dry_run}}}}
    result = undo_import.execute_in_process(run_config=config, resources={"hrms_db": hrms_db})
    assert result.success
    return next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata


def placeholders_in_other_files(database_url, run_id):
    """Employees the org stage inserted (placeholder leaders) that rows another record of the run
    inserted point at (a team of teams.csv, the users stage's own rows): the case the undo once refused."""
    return scalar(database_url, """
        SELECT count(*) FROM hrms.employees_employee e JOIN hrms.imports_importrecord ir ON ir.id = e.import_record_id
        WHERE ir.run_id = %s AND e.team_id IN (SELECT t.id FROM hrms.org_team t WHERE t.import_record_id <> ALL (
              SELECT i.import_record_id FROM hrms.imports_undoinsert i WHERE i.table_name = 'employees_employee'
              AND e.id = ANY(i.row_ids)))""", [run_id])


def test_undo_of_the_demo_import_dry_run_then_for_real_then_it_imports_again(hrms_db, database_url):
    assert seed_environment.execute_in_process(resources={"hrms_db": hrms_db}).success   # make demo seeds first
    before = checksums(database_url, HR_TABLES)
    run_id = demo_import(hrms_db)
    imported = checksums(database_url, HR_TABLES)
    employees = scalar(database_url, "SELECT count(*) FROM hrms.employees_employee")
    assert employees == 200 and placeholders_in_other_files(database_url, run_id) > 0
    # the placeholders of the tribes and chapters files stand in teams of teams.csv after the users stage
    org_records = scalar(database_url, "SELECT count(DISTINCT import_record_id) FROM hrms.imports_undoinsert i "
                                       "JOIN hrms.imports_importrecord r ON r.id = i.import_record_id "
                                       "WHERE r.run_id = %s AND r.stage = 'org' AND i.table_name = 'employees_employee'", [run_id])
    assert org_records >= 2

    rehearsal = undo_job(hrms_db, run_id, dry_run=True)
    assert rehearsal["rows_removed"].value == scalar(database_url, "SELECT sum(cardinality(i.row_ids)) FROM hrms.imports_undoinsert i "
                                                                   "JOIN hrms.imports_importrecord r ON r.id = i.import_record_id "
                                                                   "WHERE r.run_id = %s", [run_id])
    assert checksums(database_url, HR_TABLES) == imported, "a dry run changes nothing"
    assert scalar(database_url, "SELECT count(*) FROM hrms.imports_importrecord WHERE run_id = %s AND outcome = 'undone'", [run_id]) == 0

    undo_job(hrms_db, run_id, dry_run=False)
    assert checksums(database_url, HR_TABLES) == before
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 0

    again = demo_import(hrms_db)          # the undone files are not "unchanged": they import again
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == employees
    assert scalar(database_url, "SELECT sum(inserted) FROM hrms.imports_importrecord WHERE run_id = %s", [again]) > 0
    undo_job(hrms_db, again, dry_run=False)
    assert checksums(database_url, HR_TABLES) == before


def test_a_refusal_names_the_rows_that_block_it(hrms_db, database_url):
    run_id = demo_import(hrms_db)
    with psycopg.connect(database_url) as conn:   # the HR application records a leave request for an imported employee
        conn.execute("INSERT INTO hrms.leave_leavetype (code, name) VALUES ('ANNUAL', 'Annual leave')")
        conn.execute("""INSERT INTO hrms.leave_leaverequest (employee_id, leave_type_id, starts_on, ends_on, days)
                        SELECT e.id, (SELECT id FROM hrms.leave_leavetype), '2026-01-05', '2026-01-06', 2
                        FROM hrms.employees_employee e WHERE e.email = 'adwoa.alhassan@nhia.gov.gh'""")
    imported = checksums(database_url, HR_TABLES)
    with hrms_db.connection(RESTORER) as conn:
        with pytest.raises(undo.UndoRefused) as refused:
            undo.undo_run(conn, run_id, undo_run_id="undo")
    message = str(refused.value)
    assert "hrms.leave_leaverequest" in message and "not an import table" in message
    assert "employees_employee" in message and "a***@nhia.gov.gh" in message and "adwoa.alhassan" not in message
    assert checksums(database_url, HR_TABLES) == imported

    with psycopg.connect(database_url) as conn:   # an employee entered by hand reports to an imported one
        conn.execute("DELETE FROM hrms.leave_leaverequest")
        conn.execute("""INSERT INTO hrms.employees_employee (email, first_name, last_name, manager_id)
                        SELECT 'kwame.new@nhia.gov.gh', 'Kwame', 'New', id FROM hrms.employees_employee
                        WHERE email = 'adwoa.alhassan@nhia.gov.gh'""")
    with hrms_db.connection(RESTORER) as conn:
        with pytest.raises(undo.UndoRefused) as refused:
            undo.undo_run(conn, run_id, undo_run_id="undo")
    message = str(refused.value)
    assert "written by run outside any import" in message and "k***@nhia.gov.gh" in message
    assert "outside the import tables" not in message and "not an import table" not in message
