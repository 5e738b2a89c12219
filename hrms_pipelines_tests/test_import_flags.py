"""Every flag of the seed's commands, with the same meaning, on the small company."""

import stat

import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.resources import IMPORTER

from .import_helpers import BASE, checksums, run_all, run_stage, scalar, write, write_base


def test_without_force_update_existing_rows_stay_and_are_counted_skipped(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    users = [r[:] for r in BASE["users.csv"]]
    users[2][2] = "Owusu-Ansah"          # Kofi's last name changed in the HR export
    users[3][3] = ""                     # a blank status never erases the stored one
    write(directory, "users.csv", users)
    before = checksums(database_url)
    result = run_stage(hrms_db, "users", directory)
    assert result.counts | {} == {"rows_read": 3, "inserted": 0, "updated": 0, "unchanged": 2, "skipped": 1, "rejected": 0}
    assert checksums(database_url) == before

    forced = run_stage(hrms_db, "users", directory, force_update=True)
    assert (forced.counts["updated"], forced.counts["unchanged"]) == (1, 2)
    assert scalar(database_url, "SELECT last_name FROM hrms.employees_employee WHERE email = 'kofi.owusu@nhia.gov.gh'") == "Owusu-Ansah"
    assert scalar(database_url, "SELECT status FROM hrms.employees_employee WHERE email = 'yaa.asante@nhia.gov.gh'") == "active"
    with psycopg.connect(database_url) as conn:
        audit = conn.execute("SELECT source, action, table_name, row_key, before, after, run_id, import_record_id "
                             "FROM hrms.core_auditlog").fetchall()
    assert len(audit) == 1
    source, action, table, key, before_values, after_values, run_id, record_id = audit[0]
    assert (source, action, table, key, run_id) == ("import:users", "update", "employees_employee", "kofi.owusu@nhia.gov.gh", "test-run")
    assert before_values["last_name"] == "Owusu" and after_values["last_name"] == "Owusu-Ansah"
    assert record_id == scalar(database_url, "SELECT max(id) FROM hrms.imports_importrecord WHERE stage = 'users'")


def test_force_update_moves_org_relationships(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    write(directory, "tribes.csv", BASE["tribes.csv"] + [["CLAIMS", "Claims", "NHIA", ""]])
    write(directory, "teams.csv", [BASE["teams.csv"][0], ["MOBILE", "Mobile Renewal", "CLAIMS", "ICT", "ama.mensah@nhia.gov.gh"]])
    plain = run_stage(hrms_db, "org", directory)
    assert plain.entities["teams"]["skipped"] == 1
    assert scalar(database_url, "SELECT t.code FROM hrms.org_team m JOIN hrms.org_tribe t ON t.id = m.tribe_id") == "DIGITAL"
    run_stage(hrms_db, "org", directory, force_update=True)
    assert scalar(database_url, "SELECT t.code || '/' || m.name || '/' || e.email FROM hrms.org_team m JOIN hrms.org_tribe t "
                                "ON t.id = m.tribe_id JOIN hrms.employees_employee e ON e.id = m.leader_id") == "CLAIMS/Mobile Renewal/ama.mensah@nhia.gov.gh"


def test_create_users_makes_placeholders_that_the_users_stage_completes(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in", teams=[BASE["teams.csv"][0], ["MOBILE", "Mobile", "DIGITAL", "ICT", " Ama.Mensah@NHIA.gov.gh"]])
    run_all(hrms_db, directory, ("ladders",))
    result = run_stage(hrms_db, "org", directory, create_users=True)
    assert result.entities["placeholder users (teams)"] == {"inserted": 1}
    assert scalar(database_url, "SELECT is_placeholder AND first_name IS NULL FROM hrms.employees_employee WHERE email = 'ama.mensah@nhia.gov.gh'")
    users = run_stage(hrms_db, "users", directory)
    assert users.counts["inserted"] == 2 and users.counts["updated"] == 1
    assert users.entities["users"]["placeholders completed"] == 1
    assert scalar(database_url, "SELECT NOT is_placeholder AND first_name = 'Ama' FROM hrms.employees_employee WHERE email = 'ama.mensah@nhia.gov.gh'")


def test_ladder_sections(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    only_ladders = run_stage(hrms_db, "ladders", directory, ladders_only=True)
    assert only_ladders.entities.keys() == {"ladders"} and only_ladders.counts["skipped"] == 4
    assert scalar(database_url, "SELECT count(*) FROM hrms.ladders_level") == 0
    # validations run after each stage: the ladder has no levels yet, a warning (not blocking)
    assert any("ladders_without_levels" in text for _, text in only_ladders.log_lines)
    levels = run_stage(hrms_db, "ladders", directory, levels_only=True)
    assert levels.entities.keys() == {"levels"} and levels.entities["levels"]["inserted"] == 3
    aspects = run_stage(hrms_db, "ladders", directory, aspects_only=True)
    assert aspects.entities["aspects"]["inserted"] == 1
    again = run_stage(hrms_db, "ladders", directory)
    assert again.counts["inserted"] == 0 and again.counts["unchanged"] == 5


def test_history_skip_duplicates_by_default_update_existing_on_request(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory)
    summary = scalar(database_url, "SELECT summary FROM hrms.history_timelineevent WHERE event_type = 'promotion'")
    assert summary == "Promoted to L2 Engineer (Engineering), pay band P2, salary GHS 3,500.00 -> GHS 4,800.00 (+37.1%)"
    history = [r[:] for r in BASE["history.csv"]]
    history[2][7] = "5000.00"            # the promotion's salary was corrected
    write(directory, "history.csv", history)
    before = checksums(database_url)
    skipped = run_stage(hrms_db, "history", directory, skip_duplicates=True)
    assert (skipped.counts["skipped"], skipped.counts["unchanged"]) == (1, 2)
    assert checksums(database_url) == before
    updated = run_stage(hrms_db, "history", directory, update_existing=True)
    assert (updated.counts["updated"], updated.counts["unchanged"]) == (1, 2)
    assert scalar(database_url, "SELECT salary::text FROM hrms.history_compensationsnapshot c JOIN hrms.history_timelineevent e "
                                "ON e.id = c.event_id WHERE e.event_type = 'promotion'") == "5000.00"
    with psycopg.connect(database_url) as conn:
        before_values, after_values = conn.execute(
            "SELECT before, after FROM hrms.core_auditlog WHERE table_name = 'history_timelineevent'").fetchone()
    assert (before_values["salary"], after_values["salary"]) == (4800.0, 5000.0)
    assert "+42.9%" in after_values["summary"]


def test_same_file_same_options_is_recognised_at_once(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory)
    before = checksums(database_url) | checksums(database_url, ["imports_importrecord"])
    results = run_all(hrms_db, directory)
    assert all(r.unchanged for r in results)
    assert checksums(database_url) | checksums(database_url, ["imports_importrecord"]) == before
    assert any("unchanged since import record #" in text for _, text in results[-1].log_lines)


def test_log_file_gets_every_operation(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, log_file="import.log")
    log_file = settings.logs_dir() / "import.log"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600 and stat.S_IMODE(log_file.parent.stat().st_mode) == 0o700
    text = log_file.read_text()
    for stage in ("[ladders]", "[org]", "[users]", "[history]"):
        assert stage in text
    assert "history.csv: 3 rows staged" in text and "inserted 3" in text


def test_import_records_carry_sha_counts_run_and_outcome(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, run_id="run-42")
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT file_name, length(file_sha256), run_id, outcome, rows_read, inserted, options "
                           "FROM hrms.imports_importrecord WHERE stage = 'history'").fetchone()
        untagged = conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE import_record_id IS NULL").fetchone()[0]
    assert row[:6] == ("history.csv", 64, "run-42", "succeeded", 3, 3)
    assert row[6] == {"update_existing": False}
    assert untagged == 0


def test_validate_false_skips_the_in_transaction_validations(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "gap", ladders=BASE["ladders.csv"][:4] + [BASE["ladders.csv"][5]])  # levels 1 and 3
    result = run_stage(hrms_db, "ladders", directory, **{"validate": False})
    assert result.validations == [] and result.counts["inserted"] == 4
    assert scalar(database_url, "SELECT count(*) FROM hrms.ladders_level") == 2


def test_an_import_while_another_holds_the_imports_lock_fails_at_once_and_changes_nothing(hrms_db, database_url, tmp_path,
                                                                                        monkeypatch):
    from hrms_pipelines import locks

    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "0")   # no wait (the waits: test_import_lock_wait.py)
    directory = write_base(tmp_path / "in")
    before = checksums(database_url)
    with hrms_db.transaction(IMPORTER) as holder:
        with locks.transaction_lock(holder, locks.IMPORTS):
            with pytest.raises(locks.LockNotAvailable, match="Another run still holds the 'imports' lock"):
                run_stage(hrms_db, "ladders", directory)
    assert checksums(database_url) == before


def test_a_failing_check_shows_the_offending_rows(hrms_db, database_url, tmp_path):
    import dagster as dg

    from hrms_pipelines.imports import checks

    directory = write_base(tmp_path / "in", teams=[BASE["teams.csv"][0], ["MOBILE", "Mobile", "DIGITAL", "ICT", "ama.mensah@nhia.gov.gh"]])
    run_all(hrms_db, directory, ("ladders",))
    run_stage(hrms_db, "org", directory, create_users=True)
    run_stage(hrms_db, "users", directory)
    with psycopg.connect(database_url) as conn:   # HR marks the team leader as terminated, outside any import
        conn.execute("UPDATE hrms.employees_employee SET status = 'terminated' WHERE email = 'ama.mensah@nhia.gov.gh'")
    check = next(c for c in checks.import_checks if c.check_key.name == "invalid_leader_references")
    result = check(dg.build_asset_check_context(), hrms_db=hrms_db)   # outside a run: the whole tables
    assert not result.passed and result.severity.value == "ERROR"
    assert result.metadata["offending_rows"].value == 1 and result.metadata["scope"].value == "whole tables"
    assert "| team | MOBILE | a***@nhia.gov.gh | terminated |" in result.metadata["rows"].value
    assert "ama.mensah" not in result.metadata["rows"].value
    # the org stage validates what it touches: a file that leaves the team as it is commits (the
    # breakage is someone else's, reported by the whole-table check above) ...
    from hrms_pipelines.imports.stage import StageFailed

    run_stage(hrms_db, "org", directory, create_users=True, force_update=True)
    # ... and one that makes the terminated employee lead another team refuses to commit
    write(directory, "teams.csv", [BASE["teams.csv"][0], ["MOBILE", "Mobile", "DIGITAL", "ICT", "ama.mensah@nhia.gov.gh"],
                                   ["WEB", "Web", "DIGITAL", "ICT", "ama.mensah@nhia.gov.gh"]])
    before = checksums(database_url)
    with pytest.raises(StageFailed, match="invalid_leader_references") as failure:
        run_stage(hrms_db, "org", directory, create_users=True, force_update=True)
    assert "ama.mensah" not in str(failure.value) and "a***@nhia.gov.gh" in str(failure.value)
    assert checksums(database_url) == before
