"""Undo of a whole import run (undo_import), from what its stages recorded in their own
transactions: exact, refused when a later run changed the same rows, audited, as the restorer."""

import psycopg
import pytest

from hrms_pipelines.imports import undo
from hrms_pipelines.imports.jobs import undo_import
from hrms_pipelines.resources import IMPORTER, RESTORER

from .import_helpers import BASE, DATA_TABLES, checksums, run_all, run_stage, scalar, write, write_base

# The HR tables an undo puts back (the audit log and the import records are the trail: they grow).
HR_TABLES = [t for t in DATA_TABLES if t != "core_auditlog"]


def undo_run(hrms_db, run_id, **options):
    with hrms_db.connection(RESTORER) as conn:
        return undo.undo_run(conn, run_id, undo_run_id=f"undo-of-{run_id}", **options)


def second_run(directory):
    """Files that, imported with force_update / update_existing / create_users, insert, update and
    create placeholders in every stage."""
    ladders = [r[:] for r in BASE["ladders.csv"]]
    ladders[4][8] = "4600.00"                                                  # a level's pay band moves
    ladders.append(["", "ENG", "", "", "", "4", "Staff Engineer", "P4", "9000.00", "12000.00"])
    write(directory, "ladders.csv", ladders)
    write(directory, "teams.csv", [BASE["teams.csv"][0],
                                   ["MOBILE", "Mobile Renewal", "DIGITAL", "ICT", "ama.mensah@nhia.gov.gh"],  # new leader
                                   ["WEB", "Web", "DIGITAL", "ICT", "esi.boateng@nhia.gov.gh"]])           # placeholder leader
    users = [r[:] for r in BASE["users.csv"]]
    users[2][2] = "Owusu-Ansah"                                                # Kofi's name
    users[3][7] = "ama.mensah@nhia.gov.gh"                                     # Yaa's manager
    users.append(["esi.boateng@nhia.gov.gh", "Esi", "Boateng", "active", "2024-01-08", "WEB", "", "ama.mensah@nhia.gov.gh", "ENG", "4"])
    users.append(["kojo.addo@nhia.gov.gh", "Kojo", "Addo", "active", "2024-03-01", "WEB", "", "esi.boateng@nhia.gov.gh", "ENG", "1"])
    write(directory, "users.csv", users)
    history = [r[:] for r in BASE["history.csv"]]
    history[2][7] = "5000.00"                                                  # the promotion's salary corrected
    history.append(["esi.boateng@nhia.gov.gh", "hire", "2024-01-08", "ENG", "4", "", "P4", "9500.00", ""])
    history.append(["kofi.owusu@nhia.gov.gh", "salary_change", "2023-01-01", "", "", "", "P2", "5200.00", "5000.00"])
    write(directory, "history.csv", history)


def test_undo_puts_every_table_back_exactly_including_forced_updates_and_placeholders(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, run_id="run-a", create_users=True)
    after_a = checksums(database_url, HR_TABLES)
    second_run(directory)
    results = run_all(hrms_db, directory, run_id="run-b", create_users=True, force_update=True, update_existing=True)
    assert [r.counts["updated"] > 0 for r in results] == [True, True, True, True]
    assert results[1].entities["placeholder users (teams)"] == {"inserted": 1}
    assert results[2].entities["users"]["placeholders completed"] == 1
    assert all(r.captured.undo_bytes > 0 for r in results)
    assert checksums(database_url, HR_TABLES) != after_a
    audits_before = scalar(database_url, "SELECT count(*) FROM hrms.core_auditlog")

    rehearsal = undo_run(hrms_db, "run-b", dry_run=True)
    assert rehearsal.dry_run and rehearsal.totals()["employees_employee"] == {"restored": 2, "removed": 2}
    assert checksums(database_url, HR_TABLES + ["core_auditlog", "imports_importrecord"]) != after_a  # nothing changed...
    assert scalar(database_url, "SELECT count(*) FROM hrms.imports_importrecord WHERE run_id = 'run-b' AND outcome = 'succeeded'") == 8
    shown = " ".join(str(cell) for row in rehearsal.preview for cell in row)
    assert "k***@nhia.gov.gh" in shown and "kofi.owusu" not in shown and "5000.00" not in shown and "####.##" in shown

    done = undo_run(hrms_db, "run-b")
    assert checksums(database_url, HR_TABLES) == after_a
    assert [r.stage for r in done.records] == ["history", "users", "org", "org", "org", "org", "org", "ladders"]
    with psycopg.connect(database_url) as conn:
        outcomes = conn.execute("SELECT DISTINCT outcome, undone_by_run FROM hrms.imports_importrecord WHERE run_id = 'run-b'").fetchall()
        undo_audit = conn.execute("SELECT count(*), count(DISTINCT run_id) FROM hrms.core_auditlog WHERE action = 'undo'").fetchone()
        audits_after = conn.execute("SELECT count(*) FROM hrms.core_auditlog WHERE action <> 'undo'").fetchone()[0]
    assert outcomes == [("undone", "undo-of-run-b")]
    assert undo_audit[0] == sum(sum(r.restored.values()) + sum(r.removed.values()) for r in done.records) + 8
    assert audits_after == audits_before, "the audit log only grows"

    # undone files are no longer "unchanged": importing them again imports them again, and that is undoable too
    again = run_all(hrms_db, directory, run_id="run-c", create_users=True, force_update=True, update_existing=True)
    assert not any(r.unchanged for r in again)
    undo_run(hrms_db, "run-c")
    assert checksums(database_url, HR_TABLES) == after_a
    # and the first run, placeholders and all, down to nothing
    undo_run(hrms_db, "run-a")
    assert all(scalar(database_url, f"SELECT count(*) FROM hrms.{t}") == 0 for t in HR_TABLES)


def test_undo_is_refused_when_a_later_run_changed_the_same_rows_and_allowed_after_undoing_it(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org"), run_id="base")
    run_stage(hrms_db, "users", directory, run_id="run-1")
    users = [r[:] for r in BASE["users.csv"]]
    users[2][2] = "Owusu-Ansah"
    write(directory, "users.csv", users)
    run_stage(hrms_db, "users", directory, run_id="run-2", force_update=True)
    before = checksums(database_url, HR_TABLES + ["imports_importrecord"])

    with pytest.raises(undo.UndoRefused) as refused:
        undo_run(hrms_db, "run-1")
    message = str(refused.value)
    assert "run run-2" in message and "k***@nhia.gov.gh" in message and "kofi.owusu" not in message
    assert "Undo that later run first" in message
    assert checksums(database_url, HR_TABLES + ["imports_importrecord"]) == before

    undo_run(hrms_db, "run-2")
    assert scalar(database_url, "SELECT last_name FROM hrms.employees_employee WHERE email = 'kofi.owusu@nhia.gov.gh'") == "Owusu"
    undo_run(hrms_db, "run-1")
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 0


def test_undo_is_refused_while_a_later_run_references_rows_it_would_remove(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org"), run_id="base")
    run_stage(hrms_db, "users", directory, run_id="users-run")
    run_stage(hrms_db, "history", directory, run_id="history-run")
    with pytest.raises(undo.UndoRefused, match="history-run") as refused:
        undo_run(hrms_db, "users-run")
    assert "history_timelineevent" in str(refused.value) and "y***@nhia.gov.gh" in str(refused.value)
    undo_run(hrms_db, "history-run")
    undo_run(hrms_db, "users-run")
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 0


def test_undo_is_refused_when_something_else_changed_a_row_since(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"), run_id="base")
    users = [r[:] for r in BASE["users.csv"]]
    users[2][2] = "Owusu-Ansah"
    write(directory, "users.csv", users)
    run_stage(hrms_db, "users", directory, run_id="forced", force_update=True)
    with psycopg.connect(database_url) as conn:      # the HR application edits the same employee afterwards
        conn.execute("UPDATE hrms.employees_employee SET job_title = 'Lead' WHERE email = 'kofi.owusu@nhia.gov.gh'")
    with pytest.raises(undo.UndoRefused, match="changed since the run by something other than an import"):
        undo_run(hrms_db, "forced")
    assert scalar(database_url, "SELECT job_title FROM hrms.employees_employee WHERE email = 'kofi.owusu@nhia.gov.gh'") == "Lead"


def test_undo_of_unknown_or_undone_runs_says_so(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders",), run_id="only")
    with pytest.raises(undo.UndoRefused, match="no import record names it"):
        undo_run(hrms_db, "nope")
    undo_run(hrms_db, "only")
    with pytest.raises(undo.UndoRefused, match="already undone by run"):
        undo_run(hrms_db, "only")


def test_the_import_role_cannot_change_or_remove_the_undo_store_nor_mark_a_record_undone(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders",), run_id="r")
    for statement in ("UPDATE hrms.imports_undoinsert SET row_ids = '{1}'", "DELETE FROM hrms.imports_undoupdate",
                      "DELETE FROM hrms.imports_undoinsert",
                      "UPDATE hrms.imports_importrecord SET outcome = 'undone' WHERE run_id = 'r'"):
        with hrms_db.connection(IMPORTER) as conn:
            with pytest.raises(psycopg.Error, match="permission denied|cannot change"):
                conn.execute(statement)
    with hrms_db.connection(RESTORER) as conn:   # the restorer may only mark a succeeded record undone
        with pytest.raises(psycopg.Error, match="cannot change"):
            conn.execute("UPDATE hrms.imports_importrecord SET outcome = 'failed' WHERE run_id = 'r'")


def test_undo_import_job_dry_run_then_for_real(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"), run_id="night-1")
    config = {"ops": {"undo_import_run": {"config": {"run_id": "night-1", "dry_run": True}}}}
    rehearsal = undo_import.execute_in_process(run_config=config, resources={"hrms_db": hrms_db})
    assert rehearsal.success
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 3
    output = next(e for e in rehearsal.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    assert output["rows_removed"].value > 0 and "a***@nhia.gov.gh" in output["preview"].value
    assert "ama.mensah" not in output["preview"].value
    config["ops"]["undo_import_run"]["config"]["dry_run"] = False
    assert undo_import.execute_in_process(run_config=config, resources={"hrms_db": hrms_db}).success
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 0
    failed = undo_import.execute_in_process(run_config=config, resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not failed.success


def test_a_run_imported_before_change_capture_is_refused_not_half_undone(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders",), run_id="old")
    with psycopg.connect(database_url) as conn:   # as if imported before the undo store existed
        conn.execute("DELETE FROM hrms.imports_undoinsert")
    before = checksums(database_url, HR_TABLES)
    with pytest.raises(undo.UndoRefused, match="kept no undo data"):
        undo_run(hrms_db, "old")
    assert checksums(database_url, HR_TABLES) == before
    assert scalar(database_url, "SELECT outcome FROM hrms.imports_importrecord WHERE run_id = 'old'") == "succeeded"


def test_a_later_run_that_points_an_existing_row_at_a_row_to_be_removed_is_named(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"), run_id="base")
    users = [r[:] for r in BASE["users.csv"]]
    users.append(["esi.boateng@nhia.gov.gh", "Esi", "Boateng", "active", "2024-01-08", "MOBILE", "", "", "ENG", "1"])
    write(directory, "users.csv", users)
    run_stage(hrms_db, "users", directory, run_id="hires")                 # inserts Esi
    users[3][7] = "esi.boateng@nhia.gov.gh"                                  # Yaa now reports to Esi
    write(directory, "users.csv", users)
    run_stage(hrms_db, "users", directory, run_id="reorg", force_update=True)
    with pytest.raises(undo.UndoRefused) as refused:
        undo_run(hrms_db, "hires")
    assert "written by run reorg" in str(refused.value) and "y***@nhia.gov.gh" in str(refused.value)
    undo_run(hrms_db, "reorg")
    undo_run(hrms_db, "hires")
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 3
