"""Excel workbooks (.xlsx), read with python-calamine and streamed into the same CSV path.

A run names a workbook like a CSV file, by its plain name; `users.xlsx` reads the first visible
worksheet, `users.xlsx#Staff` the worksheet called Staff (everything after `.xlsx#` is the sheet
name). The chosen sheet is converted once, row by row, into CSV text in an unnamed 0600 temporary
file; from there every pass (structure, Pandera, COPY, reject rows) is the CSV one, with the row
numbers the analyst sees in Excel (the header must be in row 1).

Cells become exactly the text a person reads in the cell:
- numbers: at most 15 significant digits, as Excel shows them (8500.1 -> '8500.1', a stored
  9350.110000000001 -> '9350.11', 3.0 -> '3'), never a float repr or an exponent; in a TEXT column
  (codes, employee numbers, names: `text_columns`) a number takes the text Excel displays, its number
  format applied (123 formatted 000000 -> '000123', 244123456 formatted 0000000000 -> '0244123456');
- date cells -> 'YYYY-MM-DD' (a date-time with a time -> 'YYYY-MM-DD HH:MM:SS', which a date
  column refuses); a number stored as text stays that text ('00123');
- formulas -> their cached (last calculated) values; a formula without one (no `<v>`, or an empty
  `<v/>` as scripts write), or an error value (#DIV/0!, #N/A, ...), is refused naming its cell;
- a cell of 32,767 characters (Excel's own limit: a cell that long was cut by its writer) is refused
  naming its cell;
- booleans -> TRUE / FALSE.
Refused with a clear message: merged cells (in the header they are the usual sign of several header
rows), a header that is not in row 1, an empty sheet, a sheet name that does not exist, a file that is
not really an .xlsx, parts whose decompressed size exceeds the file limit (a zip bomb), and a sheet
whose grid (from its `<dimension>` and its cell references, streamed before calamine reads it) would
take more memory than the file limit or reach past the row limit (`xlsx_parts`).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import math
import posixpath
import re
import tempfile
import zipfile
from decimal import Decimal
from xml.etree import ElementTree

import python_calamine

from hrms_pipelines import settings
from hrms_pipelines.imports import schemas
from hrms_pipelines.imports.files import limits as limits_mod
from hrms_pipelines.imports.files import sniff, xlsx_parts
from hrms_pipelines.imports.files.errors import ImportFileError
from hrms_pipelines.imports.files.source import OpenFile

EXTENSION = ".xlsx"
SHEET_SEPARATOR = "#"
OTHER_SPREADSHEETS = (".xls", ".xlsm", ".xlsb", ".ods", ".numbers")
LISTED = 20
EXCEL_CELL_CHARS = 32_767           # the most a cell can hold in Excel: a cell that long was cut by its writer
SMALL_PART_BYTES = 16 * 1024 * 1024  # workbook.xml and its relationships, read whole
SIMPLE_TARGET = re.compile(r"^/?([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\.xml$")
NOT_TEXT_RULES = {schemas.AMOUNT, schemas.LEVEL, schemas.POSITION, schemas.TENURE, schemas.DATE}
MAIN_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def split_name(name: str) -> tuple[str, str | None]:
    """('users.xlsx', 'Staff') for 'users.xlsx#Staff'; (name, None) for anything else."""
    marker = EXTENSION + SHEET_SEPARATOR
    at = name.lower().find(marker)
    if at < 0:
        return name, None
    return name[: at + len(EXTENSION)], name[at + len(marker):] or None


def is_xlsx(file_name: str) -> bool:
    return file_name.lower().endswith(EXTENSION)


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def number_text(value: float) -> str:
    """A number as Excel shows it in a General cell: 15 significant digits, no exponent."""
    if not math.isfinite(value):
        return str(value)
    text = format(value, ".15g")
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return "0" if text in ("-0", "0") else text


def cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return str(value)


def _fail(message: str) -> ImportFileError:
    return ImportFileError(message)


def _xml(data: bytes, what: str) -> ElementTree.Element:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _fail(f"{what}: the workbook holds a document type declaration, which an .xlsx never needs; refused.")
    return ElementTree.fromstring(data)


def _sheet_parts(archive: zipfile.ZipFile, display: str) -> dict[str, str]:
    """Sheet name -> the worksheet's part in the archive."""
    try:
        for small in ("xl/workbook.xml", "xl/_rels/workbook.xml.rels"):
            if archive.getinfo(small).file_size > SMALL_PART_BYTES:
                raise _fail(f"{display}: the workbook's {small} is {archive.getinfo(small).file_size:,} bytes; a "
                            f"workbook's list of sheets never needs more than {SMALL_PART_BYTES:,}. Refused.")
        book = _xml(archive.read("xl/workbook.xml"), display)
        rels = _xml(archive.read("xl/_rels/workbook.xml.rels"), display)
    except KeyError as exc:
        raise _fail(f"{display}: not a complete Excel workbook ({exc.args[0]}). Save it again from Excel as .xlsx.") from None
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        raise _fail(f"{display}: the workbook is damaged ({str(exc)[:80]}). Save it again from Excel.") from None
    names = archive.namelist()
    if len(set(names)) != len(names):
        raise _fail(f"{display}: the workbook holds two parts under the same name, which no spreadsheet program "
                    "writes (readers disagree on which one counts). Refused; save it again from Excel.")
    targets = {r.get("Id"): r.get("Target", "") for r in rels.iter(f"{PKG_REL_NS}Relationship")}
    present = set(names)
    parts = {}
    for sheet in book.iter(f"{MAIN_NS}sheet"):
        target = targets.get(sheet.get(f"{REL_NS}id"), "")
        part = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
        # the part this reader scans must be the part calamine reads: a plain path, one way to read it
        readings = {target.lstrip("/"), posixpath.join("xl", target.lstrip("/")), part} & present
        if not SIMPLE_TARGET.match(target) or len(readings) > 1:
            raise _fail(f"{display}: the sheet {settings.excerpt(sheet.get('name', ''), 40)} is stored under an unusual "
                        f"path ({settings.excerpt(target, 60)}) that readers may resolve differently. Refused; save the "
                        "workbook again from Excel.")
        parts[sheet.get("name", "")] = part
    return parts


def _ref(ref: str, columns: list[str]) -> str:
    """'row 5, column salary (D5)' for a cell reference."""
    letters = "".join(ch for ch in ref if ch.isalpha())
    digits = "".join(ch for ch in ref if ch.isdigit())
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch.upper()) - 64)
    name = columns[index - 1] if 0 < index <= len(columns) else f"column {letters}"
    return f"row {digits}, column {name} ({ref})"


def to_csv(source: OpenFile, display: str, sheet_name: str | None, limits: limits_mod.Limits) -> tuple[OpenFile, str]:
    """The chosen worksheet as CSV text in an unnamed temporary file; returns (that file, sheet name)."""
    head = source.pread(8, 0)
    if not head.startswith(b"PK\x03\x04"):
        kind = sniff.what_is_it(source.pread(4096, 0), source) or "not a zip container (it looks like text, perhaps CSV)"
        raise _fail(f"{display}: this file is {kind}, not an Excel workbook (.xlsx). Save it from Excel as "
                    "'Excel Workbook (*.xlsx)', or as 'CSV UTF-8' and name the .csv file in the run config.")
    try:
        archive = zipfile.ZipFile(source.filelike())
    except zipfile.BadZipFile:
        raise _fail(f"{display}: the .xlsx file is damaged (not a readable zip archive). Save it again from Excel.") from None
    with archive:
        expanded = sum(i.file_size for i in archive.infolist())
        if expanded > limits.file_bytes:
            raise ImportFileError(
                f"{display}: the workbook's parts come to {expanded:,} bytes once decompressed, over the file limit of "
                f"{limits.file_bytes:,} bytes ({limits_mod.MAX_FILE_BYTES_ENV}). " + limits_mod.how_to_raise(limits_mod.MAX_FILE_BYTES_ENV))
        parts = _sheet_parts(archive, display)
        found = xlsx_parts.check_parts(archive, display, set(parts.values()))
        shared_cost = found.shared_strings * xlsx_parts.STRING_BYTES + found.shared_bytes
        if shared_cost > limits.file_bytes:
            raise limits_mod.exceeded(
                f"{display}: the workbook's {found.shared_strings:,} shared strings would take about {shared_cost:,} "
                f"bytes of memory, over the file limit of {limits.file_bytes:,} bytes ({limits_mod.MAX_FILE_BYTES_ENV}).",
                limits_mod.MAX_FILE_BYTES_ENV)
        try:
            book = python_calamine.CalamineWorkbook.from_filelike(source.filelike())
        except python_calamine.CalamineError as exc:
            raise _fail(f"{display}: the workbook cannot be read ({settings.excerpt(exc, 80)}). Save it again from Excel as .xlsx.") from None
        with book:
            name = _choose_sheet(book, sheet_name, display)
            label = f"{display} (sheet {settings.excerpt(name, 40)})"
            part = parts.get(name)
            # bounds, errors, uncalculated formulas, displayed numbers: before calamine allocates the grid
            if part not in archive.namelist():   # never let calamine read a sheet that was not scanned
                raise _fail(f"{label}: the workbook does not say where this sheet is stored (its part {settings.excerpt(part, 60)} "
                            "is missing). Save it again from Excel as .xlsx.")
            scan = xlsx_parts.scan_sheet(archive, part, label, found.formats, limits, shared_cost)
            try:
                try:
                    sheet = book.get_sheet_by_name(name)
                except python_calamine.CalamineError as exc:
                    raise _fail(f"{label}: the sheet cannot be read ({settings.excerpt(exc, 80)}). Save the workbook "
                                "again from Excel as .xlsx.") from None
                _check_sheet(sheet, label, limits)
                out = tempfile.TemporaryFile()
                try:
                    columns = _write_rows(sheet, out, label, limits, sheet.start[1], scan)
                except BaseException:
                    out.close()
                    raise
            finally:
                if scan.displayed is not None:
                    scan.displayed.close()
    errors, uncalculated = scan.errors, scan.uncalculated
    if errors or uncalculated:
        out.close()
        problems = [f"{_ref(ref, columns)} holds the Excel error {settings.excerpt(err, 20)}" for ref, err in errors]
        problems += [f"{_ref(ref, columns)} holds a formula with no calculated value" for ref in uncalculated]
        raise _fail(f"{label}: {len(problems)} cell(s) cannot be read:\n  - " + "\n  - ".join(problems) + "\n"
                    "Correct the formulas (or replace them by their values); a workbook written by a program that does "
                    "not calculate formulas must be opened and saved in Excel first. Then import again.")
    return OpenFile(out.fileno(), f"{display} as CSV", owner=out), name


def _check_sheet(sheet, label: str, limits: limits_mod.Limits) -> None:
    """Merged cells, an empty sheet, a header not in row 1, too many rows: refused."""
    merged = sheet.merged_cell_ranges or []
    if merged:
        shown = ", ".join(f"{column_letter(a[1])}{a[0] + 1}:{column_letter(b[1])}{b[0] + 1}" for a, b in merged[:LISTED])
        in_header = any(a[0] == 0 for a, _ in merged)
        raise _fail(
            f"{label}: merged cells are not supported ({shown}). "
            + ("Merged header cells usually mean several header rows: keep ONE header row, in row 1, with one "
               "column name per cell. " if in_header else "Each cell must hold its own value. ")
            + "Unmerge the cells (Home > Merge & Center > Unmerge Cells) and import again.")
    if sheet.start is None:
        raise _fail(f"{label}: the sheet is empty; it needs a header row (row 1) and at least one data row.")
    first_row, _ = sheet.start
    if first_row > 0:
        raise _fail(f"{label}: row 1 is empty; the column names must be in row 1 (the first filled row is "
                    f"{first_row + 1}). Delete the rows above the header (a title row or several header rows "
                    "are not supported) and import again.")
    if sheet.height - 1 > limits.rows:
        raise ImportFileError(
            f"{label}: {sheet.height - 1:,} data rows, over the limit of {limits.rows:,} rows "
            f"({limits_mod.MAX_ROWS_ENV}). " + limits_mod.how_to_raise(limits_mod.MAX_ROWS_ENV))


def _choose_sheet(book, sheet_name: str | None, display: str) -> str:
    names = list(book.sheet_names)
    if sheet_name is not None:
        if sheet_name in names:
            return sheet_name
        folded = [n for n in names if n.casefold() == sheet_name.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise _fail(f"{display}: the workbook has no sheet {settings.excerpt(sheet_name, 40)}; its sheets are "
                    f"{', '.join(settings.excerpt(n, 40) for n in names[:LISTED])}. Name one after '#' "
                    f"(e.g. {split_name(display)[0]}#{names[0] if names else 'Sheet1'}), or name none to read the first.")
    for meta in book.sheets_metadata:
        if meta.typ == python_calamine.SheetTypeEnum.WorkSheet and meta.visible == python_calamine.SheetVisibleEnum.Visible:
            return meta.name
    raise _fail(f"{display}: the workbook has no visible worksheet.")


@functools.cache
def text_columns() -> frozenset[str]:
    """Columns read as text by every file model (codes, employee numbers, names...): a number in
    them takes the text Excel displays. Columns any model checks as a number or a date are not."""
    text, other = set(), set()
    for model in (schemas.LaddersFile, *schemas.ORG_MODELS.values(), schemas.UsersFile, schemas.HistoryFile):
        for name, column in model.to_schema().columns.items():
            rules = {check.name for check in column.checks}
            (other if rules & NOT_TEXT_RULES else text).add(name)
    return frozenset(text - other)


def _normalised(cell: str) -> str:
    return cell.strip().lstrip("\ufeff").strip().lower().replace(" ", "_")


def _write_rows(sheet, out, label: str, limits: limits_mod.Limits, first_col: int,
                scan: xlsx_parts.SheetScan) -> list[str]:
    """Every row of the sheet as CSV text into `out`; returns the header's cells. A number in a text
    column is written as Excel displays it (its number format applied, `scan.displayed`)."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
    writer = csv.writer(text, lineterminator="\n")
    header: list[str] = []
    textual: set[int] = set()
    limit = limits.cell_bytes
    displayed = xlsx_parts.displayed_rows(scan)
    pending = next(displayed, None)
    for number, values in enumerate(sheet.iter_rows(), start=1):
        cells = [cell_text(v) for v in values]
        if number == 1:
            header = [c.strip().lower() for c in cells]
            textual = {i for i, c in enumerate(cells) if _normalised(c) in text_columns()}
        while pending is not None and pending[0] < number:
            pending = next(displayed, None)
        if pending is not None and pending[0] == number:
            for index in textual:
                shown = pending[1].get(first_col + index + 1)
                if shown is not None and index < len(values) and isinstance(values[index], (int, float)) \
                        and not isinstance(values[index], bool):
                    cells[index] = shown
        for index, cell in enumerate(cells):
            if len(cell) >= EXCEL_CELL_CHARS:
                raise _fail(
                    f"{label} {_where(header, first_col, index, number)}: the cell holds {len(cell):,} characters, "
                    f"Excel's own limit for a cell ({EXCEL_CELL_CHARS:,}): a cell cannot be longer in Excel, so this "
                    "one was most likely cut by the program that wrote the file. Nothing was written. Export the "
                    "data as 'CSV UTF-8' instead (a CSV cell has no such limit) and import that file.")
            if len(cell) * 4 > limit and len(cell.encode("utf-8")) > limit:
                raise ImportFileError(
                    f"{label} {_where(header, first_col, index, number)}: the cell holds "
                    f"{len(cell.encode('utf-8')):,} bytes, over the limit of {limit:,} bytes per cell "
                    f"({limits_mod.MAX_CELL_BYTES_ENV}). " + limits_mod.how_to_raise(limits_mod.MAX_CELL_BYTES_ENV))
        writer.writerow(cells)
    text.flush()
    text.detach()
    return header


def _where(header: list[str], first_col: int, index: int, number: int) -> str:
    """'row 5, column notes (J5)'."""
    column = header[index] if index < len(header) and header[index] else column_letter(first_col + index)
    return f"row {number}, column {column} ({column_letter(first_col + index)}{number})"
