"""What a nightly run does beside importing: compares full exports row by row and lets the same rows
go early, validates what it changed (whole tables are validate_hr_data's), takes full backups only
when asked, previews a dry run, logs progress, records every failure, and warns of cycles it left
unwritten."""

import hashlib

import dagster as dg
import psycopg
import pytest

from hrms_pipelines.imports import assets, checks, jobs, linehash, progress, records, stage as stage_module
from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
from hrms_pipelines.imports.reader import ImportFileError
from hrms_pipelines.imports.stage import StageFailed

from .import_helpers import BASE, ListLog, checksums, import_folder, run_all, run_stage, scalar, write, write_base

HEADER = BASE["users.csv"][0]


def materialize(hrms_db, directory, **options):
    with import_folder(directory):
        return dg.materialize([*assets.import_assets, *checks.import_checks],
                              resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions(**{"create_users": True, **options})},
                              instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


# --------------------------------------------------------------------------------------------------
# full exports


def test_a_full_users_export_lets_the_same_rows_go_and_still_sees_every_change(hrms_db, database_url, tmp_path, monkeypatch):
    monkeypatch.setattr(linehash, "ENABLED", False)   # the row comparison itself (known lines: test_import_linehash.py)
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    users = [r[:] for r in BASE["users.csv"]]
    users[2][2] = "Owusu-Ansah"                               # one row changed in the export
    write(directory, "users.csv", users)
    with psycopg.connect(database_url) as conn:               # and one changed in the database since, not in the file
        conn.execute("UPDATE hrms.employees_employee SET status = 'suspended' WHERE email = 'yaa.asante@nhia.gov.gh'")
    result = run_stage(hrms_db, "users", directory, force_update=True)
    assert result.counts | {} == {"rows_read": 3, "inserted": 0, "updated": 2, "unchanged": 1, "skipped": 0, "rejected": 0}
    assert any("1 of 3 rows the same as stored" in text for _, text in result.log_lines)
    assert scalar(database_url, "SELECT status FROM hrms.employees_employee WHERE email = 'yaa.asante@nhia.gov.gh'") == "active"
    # a value written another way (a blank keeps the stored value, a status in capitals) goes the full
    # way and is found unchanged there
    users[1][HEADER.index("status")] = ""
    users[2][HEADER.index("status")] = "ACTIVE"
    write(directory, "users.csv", users)
    again = run_stage(hrms_db, "users", directory, force_update=True)
    assert again.counts["unchanged"] == 3 and again.counts["updated"] == 0
    assert any("1 of 3 rows the same as stored" in text for _, text in again.log_lines)
    # a repeated row is still a repeat, even though both copies are the same as stored
    write(directory, "users.csv", users + [users[1]])
    with pytest.raises(ImportFileError, match="duplicate key in this file"):
        run_stage(hrms_db, "users", directory, force_update=True)


def test_a_full_org_export_lets_the_same_rows_go(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    write(directory, "teams.csv", BASE["teams.csv"] + [["WEB", "Web", "DIGITAL", "ICT", "kofi.owusu@nhia.gov.gh"]])
    result = run_stage(hrms_db, "org", directory, force_update=True)
    assert result.entities["teams"]["inserted"] == 1 and result.entities["teams"]["unchanged"] == 1
    assert any("teams.csv: 1 of 2 rows the same as stored" in text for _, text in result.log_lines)


def test_existing_employees_made_each_others_managers_are_a_warning_without_force_update(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    users = [r[:] for r in BASE["users.csv"]]
    users[1][HEADER.index("manager_email")] = "yaa.asante@nhia.gov.gh"   # Ama -> Yaa -> Kofi -> Ama
    write(directory, "users.csv", users)
    before = checksums(database_url)
    result = run_stage(hrms_db, "users", directory)
    assert checksums(database_url) == before and result.counts["skipped"] == 1
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert "management cycle: a***@nhia.gov.gh -> y***@nhia.gov.gh -> k***@nhia.gov.gh -> a***@nhia.gov.gh" in warning
    assert "ama.mensah" not in warning and "rows 2, 3, 4" in warning
    from hrms_pipelines.imports import summaries

    metadata = summaries.stage_metadata(result)
    assert metadata["warning_count"].value == 1 and "management cycle" in metadata["warnings"].value
    with pytest.raises(ImportFileError, match="management cycle"):
        run_stage(hrms_db, "users", directory, force_update=True)


# --------------------------------------------------------------------------------------------------
# validation sized by the change; whole tables on request


def test_a_nightly_run_validates_its_own_rows_and_validate_hr_data_the_whole_tables(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    assert materialize(hrms_db, directory).success
    with psycopg.connect(database_url) as conn:   # a pre-existing problem no import made: a team without a department
        conn.execute("UPDATE hrms.org_team SET department_id = NULL")
    history = BASE["history.csv"] + [["yaa.asante@nhia.gov.gh", "note", "2024-05-01", "", "", "", "", "", ""]]
    write(directory, "history.csv", history)
    night = materialize(hrms_db, directory)
    assert night.success
    evaluations = {e.check_name: e for e in night.get_asset_check_evaluations()}
    assert evaluations["missing_departments"].passed, "the night changed no team: it does not report the whole table"
    assert "inside the stage's transaction" in evaluations["events_without_users"].metadata["scope"].value
    assert evaluations["events_without_users"].metadata["scope"].value.startswith("rows this stage inserted or updated")

    job = jobs.validate_hr_data
    whole = dg.materialize([*assets.import_assets, *checks.import_checks], selection=dg.AssetSelection.checks(*checks.import_checks),
                           resources={"hrms_db": hrms_db, RESOURCE_KEY: ImportOptions()}, instance=dg.DagsterInstance.ephemeral(),
                           tags=job.tags, raise_on_error=False)
    found = {e.check_name: e for e in whole.get_asset_check_evaluations()}
    assert set(found) == set(checks.CHECK_NAMES) and not whole.get_asset_materialization_events()
    assert not found["missing_departments"].passed and found["missing_departments"].metadata["scope"].value == "whole tables"
    from hrms_pipelines.definitions import defs

    assert defs.resolve_job_def("validate_hr_data").tags[checks.SCOPE_TAG] == checks.WHOLE_TABLES
    schedule = defs.resolve_schedule_def("validate_hr_data_weekly")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_full_backups_only_for_the_stages_asked(hrms_db, database_url, tmp_path):
    from hrms_pipelines import backups

    directory = write_base(tmp_path / "in")
    result = materialize(hrms_db, directory, full_backup=["users"])
    assert result.success
    assert [m.label for m in backups.list_backups()] == ["import_users"]
    meta = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["backup_users"]["full_backup"].value is True
    assert meta["backup_history"]["backup"].value == "change capture in the stage's transaction"
    with pytest.raises(Exception, match="unknown stage"):
        ImportOptions(full_backup=["payroll"])


# --------------------------------------------------------------------------------------------------
# dry run preview, progress


def test_a_dry_run_previews_inserts_and_each_changed_field_masked(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    users = [r[:] for r in BASE["users.csv"]]
    users[2][2] = "Owusu-Ansah"
    users.append(["esi.boateng@nhia.gov.gh", "Esi", "Boateng", "active", "2024-01-08", "MOBILE", "", "", "ENG", "1"])
    write(directory, "users.csv", users)
    history = BASE["history.csv"] + [["kofi.owusu@nhia.gov.gh", "salary_change", "2023-01-01", "", "", "", "P2", "5200.00", "4800.00"]]
    write(directory, "history.csv", history)
    before = checksums(database_url)
    instance = dg.DagsterInstance.ephemeral()
    with import_folder(directory):
        result = dg.materialize([*assets.import_assets], resources={
            "hrms_db": hrms_db, RESOURCE_KEY: ImportOptions(dry_run=True, force_update=True)}, instance=instance)
    assert checksums(database_url) == before
    observations = {e.asset_key.path[-1]: e.event_specific_data.asset_observation.metadata
                    for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    users_preview = observations["import_users"]["preview"].value
    assert "would insert 1, would update 1" in users_preview
    assert "| k***@nhia.gov.gh | last_name | O*** | O*** |" in users_preview
    assert "| e***@nhia.gov.gh |" in users_preview and "esi.boateng" not in users_preview and "Boateng" not in users_preview
    history_preview = observations["import_history"]["preview"].value
    assert "history_compensationsnapshot**: would insert 4" in history_preview
    assert "5200.00" not in history_preview and "####.##" in history_preview
    logged = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert "dry run preview of the users stage" in logged and "kofi.owusu" not in logged


def test_a_long_stage_logs_progress_and_phase_timings(hrms_db, database_url, tmp_path, monkeypatch):
    from hrms_pipelines.imports import sample_data

    directory = tmp_path / "big"
    sample_data.generate(directory, users=50, events=3000, seed=3)
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    run_all(hrms_db, directory, ("ladders", "org", "users"), create_users=True)
    result = run_stage(hrms_db, "history", directory, chunk_rows=500)
    lines = [text for _, text in result.log_lines if "rows read and validated" in text]
    assert len(lines) >= 3 and "rows/s" in lines[0] and "left (ETA" in lines[0]
    from hrms_pipelines.imports import summaries

    metadata = summaries.stage_metadata(result)
    for phase in ("read_and_stage", "resolve", "insert", "change_capture", "validate"):
        assert isinstance(metadata[f"seconds_{phase}"].value, float)


# --------------------------------------------------------------------------------------------------
# every failure leaves its failed import record


def failing_stage(message):
    def apply(ctx, infos):
        raise StageFailed(message)
    users = stage_module.Stage("users", ("hrms.employees_employee",), lambda o: [o.file(o.users_file)],
                               lambda o: {"force_update": o.force_update}, apply)
    return users


def test_a_failure_whose_text_holds_nul_bytes_still_leaves_its_record(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    with import_folder(directory), pytest.raises(StageFailed):
        stage_module.run(hrms_db, failing_stage("bad value 'A\x00B' in row 3"), ImportOptions(), run_id="nul",
                         log=stage_module.StageLog(ListLog()))
    assert scalar(database_url, "SELECT message FROM hrms.imports_importrecord WHERE run_id = 'nul' AND outcome = 'failed'") \
        == "bad value 'A\\x00B' in row 3"


def test_file_level_failures_are_recorded_too(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    content = b"email,first_name,last_name\nkwame@nhia.gov.gh,Kwam\xe9,Mensah\n"
    (directory / "users.csv").write_bytes(content)
    with pytest.raises(ImportFileError, match="not valid UTF-8"):
        run_stage(hrms_db, "users", directory, run_id="bad-bytes")
    row = psycopg.connect(database_url).execute(
        "SELECT file_name, file_sha256, file_bytes, outcome, message FROM hrms.imports_importrecord WHERE run_id = 'bad-bytes'").fetchone()
    assert row[0] == "users.csv" and row[1] == hashlib.sha256(content).hexdigest() and row[2] == len(content) and row[3] == "failed"
    assert "not valid UTF-8" in row[4]
    with pytest.raises(ImportFileError, match="no such file"):
        run_stage(hrms_db, "users", directory, run_id="missing", users_file="nothere.csv")
    assert psycopg.connect(database_url).execute(
        "SELECT file_name, file_sha256, file_bytes, outcome FROM hrms.imports_importrecord WHERE run_id = 'missing'").fetchone() \
        == ("nothere.csv", records.UNREADABLE_SHA256, None, "failed")


def test_a_database_error_while_recording_a_failure_is_told_not_swallowed(hrms_db, database_url, tmp_path, monkeypatch):
    directory = write_base(tmp_path / "in")

    def broken(*args, **kwargs):
        raise psycopg.errors.InsufficientPrivilege("permission denied for table imports_importrecord")

    monkeypatch.setattr(records, "record_outcome", broken)
    log = ListLog()
    with import_folder(directory), pytest.raises(StageFailed) as failure:
        stage_module.run(hrms_db, failing_stage("the stage failed"), ImportOptions(), run_id="r", log=stage_module.StageLog(log))
    assert any(level == "error" and "could not be written" in text and "permission denied" in text for level, text in log.lines)
    assert "permission denied" in failure.value.record_error
    assert "The failed import record could not be written: InsufficientPrivilege" in assets._described(failure.value)


def test_a_stage_that_did_not_validate_has_its_checks_run_over_the_runs_rows(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "in")
    result = materialize(hrms_db, directory, **{"validate": False})
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    scope = evaluations["events_without_users"].metadata["scope"].value
    assert scope.startswith("rows import record(s) #") and "inserted or updated" in scope
    assert all(e.passed for e in evaluations.values() if e.check_name != "ladders_without_aspects")
