"""Issue 22: an undo_import or a restore_backup takes back the word of earlier import records, so a
later file that holds the removed rows is read in full and brings them back (never "unchanged")."""

import csv
import shutil
from pathlib import Path

import pytest

from hrms_pipelines import backups, settings
from hrms_pipelines.imports import schedules, undo
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.resources import READER, RESTORER

from .import_helpers import import_folder, run_all, run_stage, scalar

SAMPLE = settings.PROJECT_ROOT / "seeds" / "sample"
HISTORY_TABLES = ["history_timelineevent", "history_compensationsnapshot", "history_senioritysnapshot"]
# each history table by its natural content: ids, import record ids and times differ after a re-import
CONTENT = {
    "history_timelineevent": "SELECT to_jsonb(t) - 'id' - 'import_record_id' - 'created_at' - 'updated_at' FROM hrms.history_timelineevent t",
    **{table: f"SELECT jsonb_build_object('event', ev.employee_id || '/' || ev.event_type || '/' || ev.event_date) "
              f"|| (to_jsonb(t) - 'id' - 'event_id' - 'import_record_id' - 'created_at' - 'updated_at') "
              f"FROM hrms.{table} t JOIN hrms.history_timelineevent ev ON ev.id = t.event_id"
       for table in ("history_compensationsnapshot", "history_senioritysnapshot")},
}
FIVE = [["dzifa.fuseini@nhia.gov.gh", "note", f"2016-0{m}-01", "", "", "", "", "", "", "", "", "", f"note {m}"] for m in range(1, 6)]
THREE = [["dzifa.fuseini@nhia.gov.gh", "salary_change", f"2017-0{m}-01", "", "", "", "", "", "P1", f"{5300 + m}.00", "", "GHS", ""]
         for m in range(1, 4)]


def checksums(url: str) -> dict[str, tuple[int, str]]:
    return {t: scalar(url, f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ({q}) s(x)")
            for t, q in CONTENT.items()}


def events(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM hrms.history_timelineevent")


@pytest.fixture
def company(hrms_db, tmp_path):
    """The sample company imported as `make demo` does, plus a.csv (its history + 5 events) and
    b.csv (a.csv + 3 more)."""
    directory = tmp_path / "in"
    shutil.copytree(SAMPLE, directory)
    run_all(hrms_db, directory, run_id="demo", create_users=True)
    with (SAMPLE / "history.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    for name, extra in (("a.csv", FIVE), ("b.csv", FIVE + THREE)):
        with (directory / name).open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows + extra)
    return directory


def import_history(hrms_db, directory: Path, name: str, run_id: str):
    return run_stage(hrms_db, "history", directory, run_id=run_id, history_file=name)


def nightly(hrms_db, directory: Path, history_file: str):
    """(changed, unchanged) files as the nightly schedule sees them, and its answer."""
    with import_folder(directory):
        changed, unchanged, _ = schedules.changed_files(hrms_db, ImportOptions(**schedules.NIGHTLY_OPTIONS, history_file=history_file))
    return changed, unchanged


def test_after_an_undo_a_later_file_holding_the_undone_rows_is_read_and_brings_them_back(hrms_db, database_url, company):
    a = import_history(hrms_db, company, "a.csv", "run-a")
    assert a.counts["inserted"] == 5
    b = import_history(hrms_db, company, "b.csv", "run-b")
    assert b.counts["inserted"] == 3 and b.counts["unchanged"] == 2005
    imported_b = checksums(database_url)     # what importing b.csv gives without any undo
    total = events(database_url)
    assert not any(n.startswith("b.csv") for n in nightly(hrms_db, company, "b.csv")[0])

    with hrms_db.connection(RESTORER) as conn:
        done = undo.undo_run(conn, "run-a", undo_run_id="undo-a")
    assert done.totals()["history_timelineevent"] == {"restored": 0, "removed": 5}
    assert "the next import of history files will read them in full" in done.full_reads
    assert events(database_url) == total - 5
    assert scalar(database_url, "SELECT stage || ':' || run_id FROM hrms.imports_shortcutreset") == "history:undo-a"

    # the nightly schedule no longer takes b.csv for unchanged, and asks for another run than before
    changed, unchanged = nightly(hrms_db, company, "b.csv")
    assert any(n.startswith("b.csv:") for n in changed) and not any(n.startswith("b.csv:") for n in unchanged)
    assert any(n.startswith("users.csv:") for n in unchanged), "the other stages keep their shortcut"

    again = import_history(hrms_db, company, "b.csv", "run-b2")
    assert not again.unchanged and again.files[0].path == "full"
    assert again.counts["inserted"] == 5 and again.counts["unchanged"] == 2003 and again.counts["rejected"] == 0
    assert events(database_url) == total
    assert checksums(database_url) == imported_b
    # its record vouches again: the next import of the same file is unchanged
    assert import_history(hrms_db, company, "b.csv", "run-b3").unchanged


def test_after_an_undo_an_appended_file_is_read_in_full_not_only_its_tail(hrms_db, database_url, company):
    import_history(hrms_db, company, "b.csv", "run-1")            # b.csv as history.csv's next export
    shutil.copy(company / "a.csv", company / "c.csv")
    import_history(hrms_db, company, "c.csv", "run-c")            # a.csv's rows were all there
    with hrms_db.connection(RESTORER) as conn:
        undo.undo_run(conn, "run-1", undo_run_id="undo-1")      # removes the 5 + 3 events
    with (company / "c.csv").open("a", newline="") as handle:     # c.csv grows by the 3 events of b.csv
        csv.writer(handle, lineterminator="\n").writerows(THREE)
    result = import_history(hrms_db, company, "c.csv", "run-c2")
    assert result.files[0].path == "full", "the append path would only read the 3 rows after c.csv's old end"
    assert result.counts["inserted"] == 8 and result.files[0].appended_to is None


def test_after_a_restore_a_file_imported_since_the_backup_is_read_again(hrms_db, database_url, company, tmp_path):
    import_history(hrms_db, company, "a.csv", "run-a")
    with hrms_db.connection(READER, autocommit=True) as reader:
        manifest = backups.take_backup(reader, HISTORY_TABLES, label="before b", run_id="backup", backup_root=tmp_path / "b")
    import_history(hrms_db, company, "b.csv", "run-b")
    imported_b = checksums(database_url)
    with hrms_db.connection(RESTORER, autocommit=True) as restorer:
        said = []
        restored = backups.restore_backup(restorer, manifest.backup_id, backup_root=tmp_path / "b", run_id="restore",
                                          log=said.append)
    assert {t.table: t.deleted for t in restored.tables}["hrms.history_timelineevent"] == 3
    assert any("the next import of ladders, org, users and history files will read them in full" in line for line in said)
    # run-b's record is still 'succeeded' (the backup did not hold the import records), yet it no longer vouches
    assert scalar(database_url, "SELECT outcome FROM hrms.imports_importrecord WHERE run_id = 'run-b'") == "succeeded"
    again = import_history(hrms_db, company, "b.csv", "run-b2")
    assert not again.unchanged and again.counts["inserted"] == 3
    assert checksums(database_url) == imported_b


def test_a_dry_run_undo_or_restore_takes_back_nothing(hrms_db, database_url, company):
    import_history(hrms_db, company, "a.csv", "run-a")
    with hrms_db.connection(RESTORER) as conn:
        rehearsal = undo.undo_run(conn, "run-a", undo_run_id="undo-a", dry_run=True)
    assert "history files will read them in full" in rehearsal.full_reads
    assert scalar(database_url, "SELECT count(*) FROM hrms.imports_shortcutreset") == 0
    assert import_history(hrms_db, company, "a.csv", "run-a2").unchanged
