"""Append-aware files: only a true append of the file last imported successfully is read from its
tail; everything else takes the full path, and both land on the same rows."""

import psycopg
import pytest

from hrms_pipelines.imports import undo
from hrms_pipelines.imports.reader import ImportFileError
from hrms_pipelines.resources import RESTORER, PinnedDatabase

from .conftest import _url, create_database, drop_database
from .import_helpers import BASE, run_all, run_stage, scalar, write_base

NEW = [["kofi.owusu@nhia.gov.gh", "salary_change", "2023-01-01", "", "", "", "P2", "5200.00", "4800.00"],
       ["yaa.asante@nhia.gov.gh", "note", "2024-05-01", "", "", "", "", "", ""]]
# the history tables by their natural content (ids, record ids and times differ between databases)
CONTENT = """
    SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
        SELECT concat_ws(',', e.email, ev.event_type, ev.event_date, ev.summary, ev.details, c.salary, c.previous_salary,
                         s.level_number, s.title) AS x
        FROM hrms.history_timelineevent ev JOIN hrms.employees_employee e ON e.id = ev.employee_id
        LEFT JOIN hrms.history_compensationsnapshot c ON c.event_id = ev.id
        LEFT JOIN hrms.history_senioritysnapshot s ON s.event_id = ev.id) q"""


@pytest.fixture
def base(hrms_db, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, run_id="base")
    return directory


@pytest.fixture
def fresh(pg_admin_url, migrated_template):
    """Another database, to import a file the full way and compare."""
    name = create_database(pg_admin_url, template=migrated_template)
    yield PinnedDatabase(location=_url(pg_admin_url, name)), _url(pg_admin_url, name)
    drop_database(pg_admin_url, name)


def full_import_content(fresh, directory) -> str:
    db, url = fresh
    run_all(db, directory, run_id="full")
    return scalar(url, CONTENT)


def append(directory, rows, name="history.csv"):
    with (directory / name).open("a", newline="") as handle:
        import csv
        csv.writer(handle, lineterminator="\n").writerows(rows)


def history_record(url, run_id):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT rows_read, file_rows, appended_to, message FROM hrms.imports_importrecord "
                            "WHERE run_id = %s AND stage = 'history'", [run_id]).fetchone()


def test_a_true_append_reads_only_the_new_rows_and_lands_where_the_full_path_does(hrms_db, database_url, base, fresh):
    append(base, NEW)
    result = run_stage(hrms_db, "history", base, run_id="night")
    assert result.files[0].path == "appended"
    assert result.counts["rows_read"] == 2 and result.counts["inserted"] == 2
    rows_read, file_rows, appended_to, message = history_record(database_url, "night")
    assert (rows_read, file_rows) == (2, 5)
    assert appended_to == scalar(database_url, "SELECT id FROM hrms.imports_importrecord WHERE run_id = 'base' AND stage = 'history'")
    assert message.startswith("appended 2 rows to a file of 3 rows (import record #")
    from hrms_pipelines.imports import summaries

    assert summaries.stage_metadata(result)["path"].value.startswith("appended 2 rows to a file of 3 rows")
    assert scalar(database_url, CONTENT) == full_import_content(fresh, base)
    # a further append goes on from there (row numbers included: a bad row is named as in the whole file)
    append(base, [["ama.mensah@nhia.gov.gh", "salary_change", "2024-06-01", "", "", "", "P3", "7,000.00", ""]])
    with pytest.raises(ImportFileError, match="history.csv row 7, column salary"):
        run_stage(hrms_db, "history", base, run_id="bad-night")
    # and undoing the appended import removes just its rows
    with hrms_db.connection(RESTORER) as conn:
        undo.undo_run(conn, "night")
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_timelineevent") == 3


@pytest.mark.parametrize("change", ["middle_row", "truncated", "same_size_other_bytes"])
def test_anything_but_a_true_append_takes_the_full_path(hrms_db, database_url, base, fresh, change):
    text = (base / "history.csv").read_text()
    if change == "middle_row":
        text = text.replace("4800.00", "4900.00", 1)
        text += "yaa.asante@nhia.gov.gh,note,2024-05-01,,,,,,\n"
    elif change == "truncated":
        text = "\n".join(text.splitlines()[:-1]) + "\n"
    else:
        text = text.replace("3500.00", "3600.00")          # same length, other bytes
        assert len(text) == len((base / "history.csv").read_text())
    (base / "history.csv").write_text(text)
    before = scalar(database_url, CONTENT)
    result = run_stage(hrms_db, "history", base, run_id="night", update_existing=True)
    assert result.files[0].path == "full" and result.counts["rows_read"] == len(text.splitlines()) - 1
    assert any("full path" in line for _, line in result.log_lines)
    assert history_record(database_url, "night")[2] is None
    if change == "truncated":   # fewer rows: nothing new, nothing removed
        assert result.counts["unchanged"] == 2 and scalar(database_url, CONTENT) == before
    else:                        # the same rows as importing the file as it is now, whole, into an empty database
        assert scalar(database_url, CONTENT) == full_import_content_with(fresh, base, update_existing=True)


def test_a_file_that_begins_like_an_older_import_but_not_the_last_takes_the_full_path(hrms_db, database_url, base, fresh):
    v1 = (base / "history.csv").read_text()
    (base / "history.csv").write_text(v1.replace("3200.00", "3300.00"))      # v2: the last successful import
    run_stage(hrms_db, "history", base, run_id="v2", update_existing=True)
    (base / "history.csv").write_text(v1)                                    # v3 = v1 + new rows
    append(base, NEW)
    result = run_stage(hrms_db, "history", base, run_id="v3", update_existing=True)
    assert result.files[0].path == "full" and result.counts["rows_read"] == 5
    assert scalar(database_url, CONTENT) == full_import_content_with(fresh, base, update_existing=True)


def full_import_content_with(fresh, directory, **options) -> str:
    db, url = fresh
    run_all(db, directory, run_id="full", **options)
    return scalar(url, CONTENT)


def test_a_tail_that_repeats_an_earlier_row_takes_the_full_path_and_is_rejected_there(hrms_db, database_url, base):
    append(base, [BASE["history.csv"][1]])
    with pytest.raises(ImportFileError, match="duplicate key in this file"):
        run_stage(hrms_db, "history", base, run_id="repeat")
    assert scalar(database_url, "SELECT count(*) FROM hrms.history_timelineevent") == 3


def test_a_users_file_with_new_users_appended(hrms_db, database_url, base):
    append(base, [["esi.boateng@nhia.gov.gh", "Esi", "Boateng", "active", "2024-01-08", "MOBILE", "", "ama.mensah@nhia.gov.gh",
                   "ENG", "1"]], name="users.csv")
    result = run_stage(hrms_db, "users", base, run_id="users-night")
    assert result.files[0].path == "appended" and result.counts["rows_read"] == 1 and result.counts["inserted"] == 1
    assert scalar(database_url, "SELECT m.email FROM hrms.employees_employee e JOIN hrms.employees_employee m ON m.id = e.manager_id "
                                "WHERE e.email = 'esi.boateng@nhia.gov.gh'") == "ama.mensah@nhia.gov.gh"
    # other options than the last import: the full path
    append(base, [["kojo.addo@nhia.gov.gh", "Kojo", "Addo", "active", "2024-03-01", "MOBILE", "", "", "ENG", "1"]], name="users.csv")
    forced = run_stage(hrms_db, "users", base, run_id="forced", force_update=True)
    assert forced.files[0].path == "full" and forced.counts["rows_read"] == 5
