"""Bad input: every case fails with a message naming file, row, column, value and rule, and writes
nothing (table checksums equal before and after); odd but valid text is stored verbatim."""

import csv

import psycopg
import pytest

from hrms_pipelines import privacy, settings
from hrms_pipelines.imports.reader import ImportFileError
from hrms_pipelines.imports.stage import StageFailed
from hrms_pipelines.resources import IMPORTER

from .import_helpers import BASE, checksums, run_all, run_stage, scalar, write, write_base


HEADER = BASE["users.csv"][0]


@pytest.fixture
def base(hrms_db, tmp_path):
    """ladders, org and users of the small company imported; history not yet."""
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    return directory


def fails(hrms_db, url, stage, directory, *expected, error=ImportFileError, **options):
    before = checksums(url)
    with pytest.raises(error) as info:
        run_stage(hrms_db, stage, directory, **options)
    assert checksums(url) == before, "a failed stage must leave every table as it was"
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    return info.value


def test_missing_file(hrms_db, database_url, base):
    (base / "history.csv").unlink()
    fails(hrms_db, database_url, "history", base, "history.csv: no such file in the import folder", str(base))


def test_empty_file_and_header_only(hrms_db, database_url, base):
    (base / "users.csv").write_bytes(b"")
    fails(hrms_db, database_url, "users", base, "users.csv: the file is empty")
    write(base, "users.csv", [HEADER])
    fails(hrms_db, database_url, "users", base, "users.csv: the file has a header but no data rows")


def test_missing_or_misspelled_column(hrms_db, database_url, base):
    rows = [r[:] for r in BASE["users.csv"]]
    rows[0][1] = "frist_name"
    write(base, "users.csv", rows)
    fails(hrms_db, database_url, "users", base, "users.csv: row 1 (header) is missing required column(s) 'first_name' (found 'frist_name': misspelled?)")


def test_a_file_without_its_header_row_is_described_by_shape_and_kept_whole_only_in_the_reject_file(
        hrms_db, database_url, base):
    """An export saved without its header row: row 1 is a person. The message describes row 1 by the
    shape of its cells; the person is only in the 0600 reject file (issue 17 item 5)."""
    person = ["headless.person@nhia.gov.gh", "Headlessfirst", "Headlesslast", "active", "2015-02-01", "MOBILE",
              "BACKEND", "", "ENG", "3"]
    write(base, "users.csv", [person] + BASE["users.csv"][1:])
    error = fails(
        hrms_db, database_url, "users", base,
        "users.csv: row 1 does not look like a header: 10 cells, cell 1 an e-mail address, cell 2 text of 13 "
        "characters, cell 3 text of 12 characters, cell 4 text of 6 characters, cell 5 a date, cell 6 text of 6 "
        "characters, cell 7 text of 7 characters, cell 8 empty, cell 9 text of 3 characters, cell 10 a number.",
        "Row 1 is listed in full in", run_id="run-nohdr")
    message = str(error) + str(scalar(database_url, "SELECT string_agg(message, ' ') FROM hrms.imports_importrecord "
                                                    "WHERE run_id = 'run-nohdr'"))
    for value in ("headless", "Headless", "nhia.gov.gh", "2015-02-01", "MOBILE", "Found (excerpt)"):
        assert value not in message, value
    path = settings.rejects_dir() / "run-nohdr" / "users.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][:2] == ["users.csv", "1"] and rows[1][4:] == person
    assert "does not look like a header" in rows[1][3]


def test_a_header_row_with_a_misspelled_column_still_names_what_it_found(hrms_db, database_url, base):
    rows = [r[:] for r in BASE["users.csv"]]
    rows[0][2] = "surname"
    write(base, "users.csv", rows)
    fails(hrms_db, database_url, "users", base, "missing required column(s) 'last_name'",
          "Found (excerpt): 'email,first_name,surname,status")


def test_extra_columns_are_ignored_with_a_warning(hrms_db, database_url, base):
    rows = [r + ["x"] for r in BASE["users.csv"]]
    rows[0][-1] = "favourite_colour"
    rows.append(["new.person@nhia.gov.gh", "New", "Person", "", "", "", "", "", "", "", "blue"])
    write(base, "users.csv", rows)
    result = run_stage(hrms_db, "users", base)
    assert result.counts["inserted"] == 1
    assert any(level == "warning" and "ignoring extra column(s) favourite_colour" in text for level, text in result.log_lines)


def test_malformed_dates_and_numbers_all_reported_at_once(hrms_db, database_url, base):
    write(base, "history.csv", [
        BASE["history.csv"][0],
        ["kofi.owusu@nhia.gov.gh", "hire", "2019-13-45", "ENG", "1", "", "P1", "3500.00", ""],
        ["kofi.owusu@nhia.gov.gh", "promotion", "2021-01-01", "ENG", "two", "1", "P2", "4,800.00", "3500.00"],
        ["yaa.asante@nhia.gov.gh", "promoted", "01/09/2021", "ENG", "1", "", "P1", "3200.00", ""],
    ])
    error = fails(hrms_db, database_url, "history", base,
                  "history.csv row 2, column event_date, value '2019-13-45': a date as YYYY-MM-DD",
                  "history.csv row 3, column level_number, value 'two': a whole number from 1 to 20",
                  "history.csv row 3, column salary, value '#,###.##': an amount like 8500.00",
                  "history.csv row 4, column event_type, value 'promoted': one of: hire, promotion",
                  "history.csv row 4, column event_date, value '01/09/2021'")
    assert error.rejects.count == 5


def test_duplicate_keys_inside_a_file(hrms_db, database_url, base):
    rows = BASE["users.csv"] + [["  AMA.Mensah@NHIA.gov.gh ", "Ama", "Mensah", "", "", "", "", "", "", ""]]
    write(base, "users.csv", rows)
    fails(hrms_db, database_url, "users", base,
          "users.csv row 5, column email, value 'a***@nhia.gov.gh': duplicate key in this file (first seen on row 2)")


@pytest.mark.parametrize("column, value, rule", [
    ("team_code", "NOPE", "unknown team"),
    ("ladder_code", "NOPE", "unknown ladder"),
    ("level_number", "9", "unknown level of ladder ENG"),
    ("manager_email", "ghost@nhia.gov.gh", "unknown manager"),
])
def test_unknown_references_in_users(hrms_db, database_url, base, column, value, rule):
    row = ["new.person@nhia.gov.gh", "New", "Person", "active", "", "MOBILE", "", "", "ENG", "1"]
    row[HEADER.index(column)] = value
    write(base, "users.csv", BASE["users.csv"] + [row])
    fails(hrms_db, database_url, "users", base, f"users.csv row 5, column {column}, value '{privacy.mask_cell(column, value.lower() if '@' in value else value)}': {rule}")


def test_unknown_users_ladders_and_levels_in_history(hrms_db, database_url, base):
    write(base, "history.csv", [
        BASE["history.csv"][0],
        ["nobody@nhia.gov.gh", "hire", "2019-06-10", "", "", "", "", "", ""],
        ["kofi.owusu@nhia.gov.gh", "promotion", "2021-01-01", "XYZ", "2", "1", "", "", ""],
        ["kofi.owusu@nhia.gov.gh", "level_change", "2022-01-01", "ENG", "7", "", "", "", ""],
    ])
    fails(hrms_db, database_url, "history", base,
          "history.csv row 2, column email, value 'n***@nhia.gov.gh': unknown user",
          "history.csv row 3, column ladder_code, value 'XYZ': unknown ladder",
          "history.csv row 4, column level_number, value '7': unknown level of ladder ENG")


def test_unknown_leader_is_rejected_without_create_users(hrms_db, database_url, base):
    write(base, "teams.csv", [BASE["teams.csv"][0], ["DATA", "Data", "DIGITAL", "ICT", "New.Lead@nhia.gov.gh"]])
    fails(hrms_db, database_url, "org", base,
          "teams.csv row 2, column leader_email, value 'n***@nhia.gov.gh': unknown user (no employee has this email; run with create_users")


def test_own_manager_and_management_cycle(hrms_db, database_url, base):
    rows = [r[:] for r in BASE["users.csv"]]
    rows.append(["self@nhia.gov.gh", "Self", "Managed", "", "", "", "", "self@nhia.gov.gh", "", ""])
    write(base, "users.csv", rows)
    fails(hrms_db, database_url, "users", base, "users.csv row 5, column manager_email, value 's***@nhia.gov.gh': a user cannot be their own manager")
    # Ama (top) would report to Yaa, who reports to Kofi, who reports to Ama
    rows = [r[:] for r in BASE["users.csv"]]
    rows[1][HEADER.index("manager_email")] = "yaa.asante@nhia.gov.gh"
    write(base, "users.csv", rows)
    fails(hrms_db, database_url, "users", base,
          "column manager_email, value 'y***@nhia.gov.gh': management cycle: a***@nhia.gov.gh -> y***@nhia.gov.gh",
          force_update=True)


def test_non_utf8_bytes(hrms_db, database_url, base):
    (base / "users.csv").write_bytes(",".join(HEADER).encode() + b"\nkwame@nhia.gov.gh,Kwam\xe9,Mensah,,,,,,,\n")
    fails(hrms_db, database_url, "users", base, "users.csv: not valid UTF-8: byte 0xe9 at byte offset", "(line 2)", "CSV UTF-8")
    (base / "users.csv").write_bytes("email,first_name\n".encode("utf-16"))
    fails(hrms_db, database_url, "users", base, "users.csv: this file is UTF-16 (little-endian) text (byte order mark at byte 0), "
          "not CSV text in UTF-8", "'CSV UTF-8 (Comma delimited) (*.csv)'")


def test_bom_and_crlf_are_fine(hrms_db, database_url, base):
    write(base, "users.csv", BASE["users.csv"] + [["crlf@nhia.gov.gh", "Crlf", "User", "", "", "", "", "", "", ""]],
          newline="\r\n", bom=True)
    assert run_stage(hrms_db, "users", base).counts["inserted"] == 1
    assert scalar(database_url, "SELECT last_name FROM hrms.employees_employee WHERE email = 'crlf@nhia.gov.gh'") == "User"


def test_quotes_commas_newlines_sql_and_formulas_are_stored_verbatim(hrms_db, database_url, base):
    odd = {
        "quote@nhia.gov.gh": ('O\'Brien "Jr", II', "Line one\nline two"),
        "sql@nhia.gov.gh": ("Robert'); DROP TABLE hrms.employees_employee;--", "x' OR '1'='1"),
        "formula@nhia.gov.gh": ('=HYPERLINK("http://evil.example","click")', "+233 24 000 0000"),
        "at@nhia.gov.gh": ("@SUM(A1:A9)", "-2+3"),
    }
    rows = BASE["users.csv"] + [[email, first, last, "", "", "", "", "", "", ""] for email, (first, last) in odd.items()]
    write(base, "users.csv", rows)
    assert run_stage(hrms_db, "users", base).counts["inserted"] == 4
    with psycopg.connect(database_url) as conn:
        stored = {e: (f, l) for e, f, l in conn.execute(
            "SELECT email, first_name, last_name FROM hrms.employees_employee WHERE email = ANY(%s)", [list(odd)])}
    assert stored == odd
    assert scalar(database_url, "SELECT to_regclass('hrms.employees_employee') IS NOT NULL")


def test_thousands_of_failures_go_to_a_reject_file(hrms_db, database_url, base):
    rows = [BASE["history.csv"][0]] + [["kofi.owusu@nhia.gov.gh", "hire", f"2019-02-{30 + i % 3}x", "", "", "", "", "", ""]
                                       for i in range(3000)]
    write(base, "history.csv", rows)
    fails(hrms_db, database_url, "history", base, "3000 problem(s); nothing was written", "... and 2980 more",
          "Every rejected row is listed in full in", run_id="run-many")
    reject_file = settings.rejects_dir() / "run-many" / "history.csv"
    with reject_file.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["file", "row", "problem_columns", "rules"] + BASE["history.csv"][0] and len(lines) == 3001
    assert lines[1][:4] == ["history.csv", "2", "event_date", "event_date: a date as YYYY-MM-DD (e.g. 2024-03-31)"]
    assert lines[1][4:] == rows[1]
    failed = scalar(database_url, "SELECT rejected FROM hrms.imports_importrecord WHERE run_id = 'run-many' AND outcome = 'failed'")
    assert failed == 3000


def test_failing_blocking_validation_rolls_the_stage_back(hrms_db, database_url, tmp_path):
    directory = write_base(tmp_path / "gap", ladders=BASE["ladders.csv"][:4] + [BASE["ladders.csv"][5]])  # levels 1 and 3
    fails(hrms_db, database_url, "ladders", directory, "invalid_level_numbers", "level 2 is missing",
          "the stage was rolled back", error=StageFailed)
    assert scalar(database_url, "SELECT count(*) FROM hrms.ladders_ladder") == 0


def test_import_role_cannot_delete_or_truncate(hrms_db, base):
    for statement in ("DELETE FROM hrms.employees_employee", "TRUNCATE hrms.history_timelineevent",
                      "DELETE FROM hrms.imports_importrecord"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with hrms_db.transaction(IMPORTER) as conn:
                conn.execute(statement)


def test_a_row_with_more_cells_than_the_header(hrms_db, database_url, base):
    (base / "users.csv").write_text(",".join(HEADER) + "\nama.mensah@nhia.gov.gh,Ama,Mensah,,,,,,,,EXTRA,MORE\n")
    fails(hrms_db, database_url, "users", base, "users.csv: the CSV structure is broken",
          "row 2 has 12 cells, the header has 10: too many cells")


def test_an_unclosed_quote(hrms_db, database_url, base):
    (base / "users.csv").write_text(",".join(HEADER) + '\nama.mensah@nhia.gov.gh,"Ama,Mensah,,,,,,,\nkofi@nhia.gov.gh,Kofi,Owusu,,,,,,,\n')
    fails(hrms_db, database_url, "users", base, "users.csv: the CSV structure is broken",
          "row 2, column first_name (B): an unclosed quote")
