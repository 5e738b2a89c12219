"""Excel workbooks as analysts and programs save them (issue 17 item 7, issue 18 item 3): a dimension
bomb is refused before anything is allocated; numbers in text columns read as Excel displays them;
formulas with an empty cached value and cells cut at Excel's 32,767 characters are refused naming the
cell. Every workbook is built in the test (XlsxWriter, or a raw zip for what no writer produces)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import xlsxwriter

from hrms_pipelines.imports.files import limits, numfmt
from hrms_pipelines.imports.reader import ImportFileError, LimitExceeded, inspect_file

from .import_helpers import checksums, run_all, run_stage, scalar, write_base

USERS_HEADER = ["email", "employee_number", "first_name", "last_name", "job_title", "status", "hire_date", "team_code",
                "chapter_code", "ladder_code", "level_number"]
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def raw_workbook(path: Path, sheet_data: str, dimension: str | None = None) -> Path:
    """A minimal .xlsx written as a zip by hand: what no spreadsheet program would write."""
    content_types = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                     '2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
                     'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
                     '"/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.'
                     'main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.'
                     'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>')
    rels = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
            'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
    book = (f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" xmlns:r="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
    book_rels = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
                 '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
                 '2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>')
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    sheet = f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{MAIN}">{dim}<sheetData>{sheet_data}</sheetData></worksheet>'
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (("[Content_Types].xml", content_types), ("_rels/.rels", rels), ("xl/workbook.xml", book),
                           ("xl/_rels/workbook.xml.rels", book_rels), ("xl/worksheets/sheet1.xml", sheet)):
            archive.writestr(name, text)
    return path


HEADER_ROW = '<row r="1"><c r="A1" t="inlineStr"><is><t>email</t></is></c></row>'


def inspect_with_bounded_memory(path: Path, env: dict[str, str] | None = None) -> str:
    """inspect_file in a child process whose address space is capped at 3 GiB: a reader that
    allocates the 6 GB grid dies there (the test fails) instead of exhausting the machine."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from hrms_pipelines.imports.reader import ImportFileError, inspect_file
        try:
            inspect_file(__import__("pathlib").Path({str(path)!r}))
        except ImportFileError as exc:
            print(type(exc).__name__ + ": " + str(exc))
            sys.exit(0)
        print("read without refusal")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})})
    assert done.returncode == 0, f"the reader died (rc {done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.parametrize("cells, dimension, where", [
    (HEADER_ROW + '<row r="1000000"><c r="GR1000000"><v>1</v></c></row>', "A1:A1", "its cell GR1000000"),
    (HEADER_ROW, "A1:GR1000000", "the sheet's declared size (A1:GR1000000)"),
])
def test_a_dimension_bomb_is_refused_before_the_grid_is_allocated(tmp_path, cells, dimension, where):
    path = raw_workbook(tmp_path / "users.xlsx", cells, dimension)
    assert path.stat().st_size < 5_000
    out = inspect_with_bounded_memory(path)
    assert out.startswith("LimitExceeded: users.xlsx (sheet 'Sheet1'): " + where), out
    assert ("spans 200,000,000 cells; reading it would take about 6,400,000,000 bytes of memory, over the file limit "
            "of 1,073,741,824 bytes (HRMS_IMPORT_MAX_FILE_BYTES)") in out
    assert "raise HRMS_IMPORT_MAX_FILE_BYTES" in out


def test_a_sheet_reaching_past_the_row_limit_is_refused_from_its_references(tmp_path, monkeypatch):
    path = raw_workbook(tmp_path / "users.xlsx", HEADER_ROW + '<row r="5000"><c r="A5000"><v>1</v></c></row>')
    monkeypatch.setenv(limits.MAX_ROWS_ENV, "1000")
    with pytest.raises(LimitExceeded, match=r"its cell A5000 reaches row 5,000: more than 1,000 data rows, over the "
                                            r"limit of 1,000 rows per import file \(HRMS_IMPORT_MAX_ROWS\)"):
        inspect_file(path)


def test_a_part_larger_than_it_declares_is_refused(tmp_path):
    """The central directory says [Content_Types].xml is 10 bytes shorter than its stream: the part is
    read as a stream that never yields more than declared, and its CRC then disagrees."""
    path = raw_workbook(tmp_path / "users.xlsx", HEADER_ROW)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        declared = archive.getinfo("[Content_Types].xml").file_size
    entry = bytes(data).find(b"PK\x01\x02")                     # the first central-directory entry
    assert bytes(data[entry + 46: entry + 46 + 19]) == b"[Content_Types].xml"
    data[entry + 24: entry + 28] = (declared - 10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ImportFileError, match=r"the workbook is damaged \(\[Content_Types\].xml: Bad CRC-32"):
        inspect_file(path)


@pytest.fixture
def base(hrms_db, tmp_path):
    directory = write_base(tmp_path / "in")
    run_all(hrms_db, directory, ("ladders", "org", "users"))
    return directory


def person(email: str, **cells) -> list:
    row = {"email": email, "employee_number": "", "first_name": "Ama", "last_name": "Osei", "job_title": "Analyst",
           "status": "active", "hire_date": "2020-01-01", "team_code": "MOBILE", "chapter_code": "BACKEND",
           "ladder_code": "ENG", "level_number": "1"}
    row.update(cells)
    return [row[c] for c in USERS_HEADER]


def test_numbers_in_text_columns_read_as_excel_displays_them(hrms_db, database_url, base):
    path = base / "users.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("Staff")
    six = book.add_format({"num_format": "000000"})
    phone = book.add_format({"num_format": "0000000000"})
    us_phone = book.add_format({"num_format": "[<=9999999]###-####;(###) ###-####"})
    prefixed = book.add_format({"num_format": '"EMP-"0000'})
    two = book.add_format({"num_format": "00"})
    sheet.write_row(0, 0, USERS_HEADER)
    rows = [("padded@nhia.gov.gh", 123, six), ("phone@nhia.gov.gh", 244123456, phone),
            ("us.phone@nhia.gov.gh", 244123456, us_phone), ("prefixed@nhia.gov.gh", 42, prefixed),
            ("general@nhia.gov.gh", 123, None)]
    for r, (email, number, style) in enumerate(rows, start=1):
        sheet.write_row(r, 0, person(email))
        sheet.write_number(r, 1, number, style)
        sheet.write_number(r, USERS_HEADER.index("level_number"), 3, two)   # a number column keeps the number
    book.close()
    run_stage(hrms_db, "users", base, users_file="users.xlsx")
    stored = dict(scalar(database_url, "SELECT array_agg(ARRAY[email, employee_number || '|' || level_number]) "
                                       "FROM hrms.employees_employee WHERE email = ANY(%s)", [[r[0] for r in rows]]))
    assert stored == {"padded@nhia.gov.gh": "000123|3", "phone@nhia.gov.gh": "0244123456|3",
                      "us.phone@nhia.gov.gh": "(24) 412-3456|3", "prefixed@nhia.gov.gh": "EMP-0042|3",
                      "general@nhia.gov.gh": "123|3"}


@pytest.mark.parametrize("value, code, shown", [
    (123, "000000", "000123"), (244123456, "0000000000", "0244123456"), (244123456, "(000) 000-0000", "(024) 412-3456"),
    (1234567, "[<=9999999]###-####;(###) ###-####", "123-4567"), (1234, "#,##0", "1,234"), (3.5, "0.00", "3.50"),
    (-5, "0;(0)", "(5)"), (0.25, "0%", "25%"), (1500, '#,##0,"K"', "2K"), (45000, "yyyy-mm-dd", None),
    (5, "@", None), (5, "General", None), (12, "0.0E+00", None),
])
def test_number_formats_render_as_excel_shows_them(value, code, shown):
    assert numfmt.render(value, code) == shown


def test_a_formula_with_an_empty_cached_value_is_refused_naming_its_cell(hrms_db, database_url, base):
    path = base / "users.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, USERS_HEADER)
    sheet.write_row(1, 0, person("formula@nhia.gov.gh"))
    sheet.write_formula(1, USERS_HEADER.index("job_title"), '=UPPER("analyst")', None, "")   # <v></v>, as scripts write
    book.close()
    assert b"<v></v>" in zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml")
    before = checksums(database_url)
    with pytest.raises(ImportFileError, match=r"row 2, column job_title \(E2\) holds a formula with no calculated value"):
        run_stage(hrms_db, "users", base, users_file="users.xlsx")
    assert checksums(database_url) == before


def test_a_cell_at_excels_own_limit_is_refused_naming_its_cell(hrms_db, database_url, base):
    path = base / "users.xlsx"
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, USERS_HEADER)
    sheet.write_row(1, 0, person("long@nhia.gov.gh"))
    sheet.write_string(1, USERS_HEADER.index("job_title"), "x" * 70_000)    # XlsxWriter cuts it at 32,767, as Excel would
    book.close()
    before = checksums(database_url)
    with pytest.raises(ImportFileError) as error:
        run_stage(hrms_db, "users", base, users_file="users.xlsx")
    assert ("users.xlsx (sheet 'Sheet1') row 2, column job_title (E2): the cell holds 32,767 characters, Excel's own "
            "limit for a cell (32,767)") in str(error.value)
    assert "xxxxxxxx" not in str(error.value)
    assert checksums(database_url) == before


def test_a_sheet_whose_part_cannot_be_found_is_refused_not_read_unscanned(tmp_path):
    path = raw_workbook(tmp_path / "users.xlsx", HEADER_ROW + '<row r="2"><c r="A2" t="inlineStr"><is><t>a@b.c</t></is></c></row>')
    with zipfile.ZipFile(path) as archive:
        parts = {n: archive.read(n) for n in archive.namelist()}
    assert inspect_file(path).rows == 1
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        b'Target="worksheets/sheet1.xml"', b'Target="worksheets/nowhere.xml"')
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    with pytest.raises(ImportFileError, match=r"the workbook does not say where this sheet is stored"):
        inspect_file(path)


@pytest.mark.parametrize("target, extra", [
    ("worksheets/../worksheets/sheet1.xml", None),          # calamine would look the literal path up
    ("/xl/worksheets/sheet1.xml", "xl/xl/worksheets/sheet1.xml"),
    ("worksheets/sheet1.xml", "xl/worksheets/sheet1.xml"),  # the same name twice in the archive
])
def test_a_sheet_path_readers_could_resolve_differently_is_refused(tmp_path, target, extra):
    """A bomb hidden where calamine would look while the scan looks elsewhere: refused."""
    path = raw_workbook(tmp_path / "users.xlsx", HEADER_ROW)
    with zipfile.ZipFile(path) as archive:
        parts = [(n, archive.read(n)) for n in archive.namelist()]
    parts = [(n, d.replace(b'Target="worksheets/sheet1.xml"', f'Target="{target}"'.encode())
              if n == "xl/_rels/workbook.xml.rels" else d) for n, d in parts]
    if extra:
        parts.append((extra, parts[-1][1]))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts:
            archive.writestr(name, data)
    with pytest.raises(ImportFileError, match="unusual path|two parts under the same name"):
        inspect_file(path)
