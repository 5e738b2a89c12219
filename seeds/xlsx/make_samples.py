"""Write the sample Excel workbooks of this folder (run from the project root):

    .venv/bin/python seeds/xlsx/make_samples.py seeds/xlsx

Needs XlsxWriter (a test/dev dependency: `pip install -e '.[test]'`), which can store a formula's
cached value, merged ranges, dates and numbers stored as text exactly as Excel does. The import never
needs it: it reads workbooks with python-calamine.

- users.xlsx      sheet "Readme" (hidden), "Staff" (two new employees, an employee number stored as
                  text '00123', a hire date cell), "Contractors" (one more)
- history.xlsx    salaries as numbers formatted #,##0.00 (8500.10 stays 8500.10), event dates as date
                  cells, a salary computed by a formula (=B3*1.2, cached value 10200.12)
- bad_merged_header.xlsx   a title row merged across the columns above the header
- bad_two_header_rows.xlsx a group row above the column names
- bad_error_cell.xlsx      a salary formula whose cached value is #DIV/0!
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import xlsxwriter

USERS = ["email", "employee_number", "first_name", "last_name", "status", "hire_date", "team_code", "ladder_code",
         "level_number"]
HISTORY = ["email", "event_type", "event_date", "ladder_code", "level_number", "previous_level_number", "pay_band",
           "salary", "previous_salary"]


def users(path: Path) -> None:
    book = xlsxwriter.Workbook(path)
    date = book.add_format({"num_format": "dd/mm/yyyy"})     # shown the British way, read as a date
    readme = book.add_worksheet("Readme")
    readme.write(0, 0, "Staff and contractors to import")
    readme.hide()
    staff = book.add_worksheet("Staff")
    staff.activate()
    staff.write_row(0, 0, USERS)
    staff.write_row(1, 0, ["kwame.boateng@nhia.gov.gh"])
    staff.write_string(1, 1, "00123")                        # a number stored as text
    staff.write_row(1, 2, ["Kwame", "Boateng", "active"])
    staff.write_datetime(1, 5, dt.date(2024, 3, 31), date)
    staff.write_row(1, 6, ["MOBILE", "ENG"])
    staff.write_number(1, 8, 1)
    staff.write_row(2, 0, ["esi.owusu@nhia.gov.gh", "", "Esi", "Owusu", "on_leave"])
    staff.write_datetime(2, 5, dt.date(2022, 11, 1), date)
    staff.write_row(2, 6, ["MOBILE", "ENG"])
    staff.write_number(2, 8, 2)
    contractors = book.add_worksheet("Contractors")
    contractors.write_row(0, 0, USERS)
    contractors.write_row(1, 0, ["akosua.darko@nhia.gov.gh", "C-7", "Akosua", "Darko", "active"])
    book.close()


def history(path: Path) -> None:
    book = xlsxwriter.Workbook(path)
    money = book.add_format({"num_format": "#,##0.00"})
    date = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet = book.add_worksheet("History")
    sheet.write_row(0, 0, HISTORY)
    sheet.write_row(1, 0, ["kofi.owusu@nhia.gov.gh", "salary_change"])
    sheet.write_datetime(1, 2, dt.date(2023, 1, 1), date)
    sheet.write_row(1, 3, ["ENG", 2, None, "P2"])
    sheet.write_number(1, 7, 8500.10, money)
    sheet.write_number(1, 8, 4800.00, money)
    sheet.write_row(2, 0, ["kofi.owusu@nhia.gov.gh", "promotion"])
    sheet.write_datetime(2, 2, dt.date(2024, 1, 1), date)
    sheet.write_row(2, 3, ["ENG", 3, 2, "P3"])
    sheet.write_formula(2, 7, "=H2*1.2", money, 10200.12)    # the cached value a spreadsheet calculated
    sheet.write_formula(2, 8, "=H2", money, 8500.10)
    book.close()


def bad_merged_header(path: Path) -> None:
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("Staff")
    sheet.merge_range(0, 0, 0, 3, "Staff list, March 2026")
    sheet.write_row(1, 0, USERS)
    sheet.write_row(2, 0, ["kwame.boateng@nhia.gov.gh", "", "Kwame", "Boateng"])
    book.close()


def bad_two_header_rows(path: Path) -> None:
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("Staff")
    sheet.write_row(0, 0, ["Person", "", "", "", "Employment"])
    sheet.write_row(1, 0, USERS)
    sheet.write_row(2, 0, ["kwame.boateng@nhia.gov.gh", "", "Kwame", "Boateng"])
    book.close()


def bad_error_cell(path: Path) -> None:
    book = xlsxwriter.Workbook(path)
    sheet = book.add_worksheet("History")
    sheet.write_row(0, 0, HISTORY)
    sheet.write_row(1, 0, ["kofi.owusu@nhia.gov.gh", "salary_change", "2023-01-01", "ENG", 2, None, "P2"])
    sheet.write_formula(1, 7, "=1/0", None, "#DIV/0!")
    book.close()


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in (("users.xlsx", users), ("history.xlsx", history), ("bad_merged_header.xlsx", bad_merged_header),
                       ("bad_two_header_rows.xlsx", bad_two_header_rows), ("bad_error_cell.xlsx", bad_error_cell)):
        make(folder / name)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
