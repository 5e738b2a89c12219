"""An .xlsx's parts read as streams, BEFORE python-calamine allocates anything for them.

calamine builds a sheet as a dense grid (32 bytes a cell) from its first to its last cell: a 5 KB
workbook whose one cell sits at GR1000000 asks for 6 GB, and the process dies before any limit is
checked. So, first:

- every part except the worksheets is decompressed as a stream (zipfile checks its CRC and never
  yields more than the size the archive declares) and counted: the declared sizes are true;
- `styles.xml` is streamed for the number formats of the cell styles (a number in a text column
  takes the text Excel displays, `numfmt`);
- the chosen worksheet is streamed once (expat, a block at a time): its `<dimension>`, every cell
  reference (the grid calamine will allocate), error cells, formulas without a cached value, and the
  displayed text of numbers whose style has a number format, spooled in row order to a 0600 temporary
  file (memory stays flat however many there are).

A grid, plus the shared strings, over the file limit in memory (HRMS_IMPORT_MAX_FILE_BYTES), or
more data rows than HRMS_IMPORT_MAX_ROWS, is refused naming the limit before calamine reads the sheet.
"""

from __future__ import annotations

import re
import tempfile
import xml.parsers.expat
import zipfile
from dataclasses import dataclass, field

from hrms_pipelines.imports.files import limits as limits_mod
from hrms_pipelines.imports.files import numfmt
from hrms_pipelines.imports.files.errors import ImportFileError
from hrms_pipelines.imports.files.source import BLOCK

CELL_BYTES = 32            # calamine's Data: what one cell of the dense grid costs
STRING_BYTES = 32          # a shared string's own cost, besides its text
MAX_STYLES = 65_536        # Excel's own limit is 64,000 cell formats
LISTED = 20
REF = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d{1,7})$")


def letters_index(letters: str) -> int:
    index = 0
    for ch in letters.upper():
        index = index * 26 + (ord(ch) - 64)
    return index


def _letters(index: int) -> str:
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


_COLUMNS: dict[str, int] = {}


def parse_ref(ref: str) -> tuple[int, int] | None:
    """'GR1000000' -> (1000000, 200), 1-based; None when it is not a cell reference."""
    letters = ref.rstrip("0123456789")
    column = _COLUMNS.get(letters)
    if column is None:
        match = REF.match(ref or "")
        if not match:
            return None
        column = letters_index(match.group(1))
        if len(_COLUMNS) < 20_000:
            _COLUMNS[letters] = column
    digits = ref[len(letters):]
    if not digits or len(digits) > 7 or not digits.isdigit():
        return None
    return int(digits), column


def _parser(doctype_message: str):
    parser = xml.parsers.expat.ParserCreate()

    def doctype(*_):
        raise ImportFileError(doctype_message)

    parser.StartDoctypeDeclHandler = doctype
    return parser


def _stream(archive: zipfile.ZipFile, part: str, parser, display: str) -> int:
    """Feed a part to `parser` (may be None) a block at a time; the bytes it really holds."""
    size = 0
    try:
        with archive.open(part) as stream:
            while chunk := stream.read(BLOCK):
                size += len(chunk)
                if parser is not None:
                    parser.Parse(chunk, False)
            if parser is not None:
                parser.Parse(b"", True)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise ImportFileError(f"{display}: the workbook is damaged ({part}: {str(exc)[:80]}). Save it again from Excel.") from None
    except xml.parsers.expat.ExpatError as exc:
        raise ImportFileError(f"{display}: the workbook is damaged ({part} is not well-formed XML: {str(exc)[:80]}). "
                              "Save it again from Excel.") from None
    return size


@dataclass
class Parts:
    formats: list[str | None] = field(default_factory=list)   # style index (s=) -> its number format (None: General)
    shared_strings: int = 0
    shared_bytes: int = 0


def check_parts(archive: zipfile.ZipFile, display: str, worksheets: set[str]) -> Parts:
    """Stream every part but the worksheets (sizes, CRCs), reading the styles' number formats and
    counting the shared strings on the way."""
    parts = Parts()
    for info in archive.infolist():
        name = info.filename
        if name in worksheets or name.endswith("/"):
            continue
        if name.endswith("styles.xml") and name.startswith("xl/"):
            parts.formats = _styles(archive, name, display)
        elif name.endswith("sharedStrings.xml") and name.startswith("xl/"):
            parts.shared_bytes, parts.shared_strings = _count_strings(archive, name, display)
        else:
            _stream(archive, name, None, display)
    return parts


SI = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?si[\s/>]")


def _count_strings(archive: zipfile.ZipFile, part: str, display: str) -> tuple[int, int]:
    """(bytes, strings) of the shared strings part, counted on the raw stream (an <si> each)."""
    size = count = 0
    tail = b""
    try:
        with archive.open(part) as stream:
            while chunk := stream.read(BLOCK):
                size += len(chunk)
                if b"<!DOCTYPE" in tail + chunk:
                    raise ImportFileError(f"{display}: the shared strings hold a document type declaration; refused.")
                window = tail + chunk      # a tag cut between two blocks is counted once, in the second
                count += sum(1 for match in SI.finditer(window) if match.end() > len(tail))
                tail = window[-64:]
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise ImportFileError(f"{display}: the workbook is damaged ({part}: {str(exc)[:80]}). Save it again from Excel.") from None
    return size, count


def _styles(archive: zipfile.ZipFile, part: str, display: str) -> list[str | None]:
    codes: dict[int, str] = {}
    xfs: list[int] = []
    where = {"in_xfs": False}

    def start(tag, attrs):
        tag = tag.rsplit(":", 1)[-1]
        if tag == "numFmt" and "numFmtId" in attrs:
            codes[int(attrs["numFmtId"])] = attrs.get("formatCode", "")
        elif tag == "cellXfs":
            where["in_xfs"] = True
        elif tag == "xf" and where["in_xfs"]:
            if len(xfs) >= MAX_STYLES:
                raise ImportFileError(f"{display}: the workbook declares more than {MAX_STYLES:,} cell styles "
                                      "(Excel allows 64,000); refused.")
            xfs.append(int(attrs.get("numFmtId", "0") or 0))

    def end(tag):
        if tag.rsplit(":", 1)[-1] == "cellXfs":
            where["in_xfs"] = False

    parser = _parser(f"{display}: the styles hold a document type declaration; refused.")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    _stream(archive, part, parser, display)
    return [codes.get(i, numfmt.BUILTIN.get(i)) if i else None for i in xfs]


@dataclass
class SheetScan:
    dimension: tuple[int, int, int, int] | None = None     # first row, first col, last row, last col (1-based)
    first_row: int = 0
    first_col: int = 0
    last_row: int = 0
    last_col: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)       # (ref, error text)
    uncalculated: list[str] = field(default_factory=list)             # refs of formulas without a cached value
    displayed: object = None      # 0600 temp file of 'row<TAB>col<TAB>text' lines, in row order (or None)
    displayed_count: int = 0

    def grid_cells(self) -> int:
        rows = max(self.last_row - self.first_row + 1, 0) if self.last_row else 0
        cols = max(self.last_col - self.first_col + 1, 0) if self.last_col else 0
        return rows * cols

    def dimension_cells(self) -> int:
        if self.dimension is None:
            return 0
        r1, c1, r2, c2 = self.dimension
        return max(r2 - r1 + 1, 0) * max(c2 - c1 + 1, 0)


def scan_sheet(archive: zipfile.ZipFile, part: str, label: str, formats: list[str | None],
               limits: limits_mod.Limits, shared_cost: int) -> SheetScan:
    """One streaming pass over a worksheet; refuses a grid over the limits as soon as a reference
    (or the `<dimension>`) shows it, before calamine reads the sheet."""
    scan = SheetScan()

    def check(last_row: int, first_row: int, cells: int, what: str) -> None:
        if last_row - 1 > limits.rows:
            raise limits_mod.exceeded(
                f"{label}: {what} reaches row {last_row:,}: more than {limits.rows:,} data rows, over the limit of "
                f"{limits.rows:,} rows per import file ({limits_mod.MAX_ROWS_ENV}).", limits_mod.MAX_ROWS_ENV)
        memory = cells * CELL_BYTES + shared_cost
        if memory > limits.file_bytes:
            raise limits_mod.exceeded(
                f"{label}: {what} spans {cells:,} cells; reading it would take about {memory:,} bytes of memory, over "
                f"the file limit of {limits.file_bytes:,} bytes ({limits_mod.MAX_FILE_BYTES_ENV}). A sheet whose last "
                "used cell is far below or right of the data (an old value, a stray format) makes a huge grid: delete "
                "the empty rows and columns after the data and save again.", limits_mod.MAX_FILE_BYTES_ENV)

    local: dict[str, str] = {}
    cell = {"ref": "", "t": "n", "s": None, "formula": False, "has_v": False}
    value: list[str] = []
    at = [0, 0, False]          # row, column of the current cell; inside <v>

    def start(tag, attrs):
        tag = local.get(tag) or local.setdefault(tag, tag.rsplit(":", 1)[-1])
        if tag == "c":
            ref = attrs.get("r", "")
            parsed = parse_ref(ref) if ref else None
            row, col = parsed if parsed else (at[0] or 1, at[1] + 1)
            at[0], at[1] = row, col
            cell["ref"], cell["t"], cell["s"] = ref, attrs.get("t", "n"), attrs.get("s")
            cell["formula"] = cell["has_v"] = False
            value.clear()
            if row > scan.last_row or col > scan.last_col or row < scan.first_row or col < scan.first_col:
                _grow(row, col, ref or f"{_letters(col)}{row}")
        elif tag == "v":
            at[2] = cell["has_v"] = True
        elif tag == "f":
            cell["formula"] = True
        elif tag == "row":
            number = attrs.get("r")
            at[0] = int(number) if number and number.isdigit() else at[0] + 1
            at[1] = 0
        elif tag == "dimension":
            ref = attrs.get("ref", "")
            first, _, last = ref.partition(":")
            a, b = parse_ref(first), parse_ref(last or first)
            if a and b:
                scan.dimension = (a[0], a[1], b[0], b[1])
                check(b[0], a[0], scan.dimension_cells(), f"the sheet's declared size ({ref})")

    def _grow(row: int, col: int, ref: str) -> None:
        scan.last_row = max(scan.last_row, row)
        scan.first_row = min(scan.first_row or row, row)
        scan.last_col = max(scan.last_col, col)
        scan.first_col = min(scan.first_col or col, col)
        check(scan.last_row, scan.first_row, scan.grid_cells(), f"its cell {ref}")

    def end(tag):
        tag = local.get(tag) or local.setdefault(tag, tag.rsplit(":", 1)[-1])
        if tag == "v":
            at[2] = False
        elif tag == "c":
            kind = cell["t"]
            if kind == "n" and not cell["formula"]:
                style = cell["s"]
                if style and value:
                    index = int(style)
                    if 0 < index < len(formats) and formats[index]:
                        _display(scan, at[0], at[1], "".join(value), formats[index])
                return
            text_value = "".join(value)
            ref = cell["ref"] or f"{_letters(at[1])}{at[0]}"
            if kind == "e":
                if len(scan.errors) < LISTED:
                    scan.errors.append((ref, text_value[:20]))
            elif cell["formula"] and (not cell["has_v"] or (not text_value.strip() and kind != "str")):
                if len(scan.uncalculated) < LISTED:
                    scan.uncalculated.append(ref)
            elif kind == "n" and cell["s"] and text_value:
                index = int(cell["s"])
                if 0 < index < len(formats) and formats[index]:
                    _display(scan, at[0], at[1], text_value, formats[index])

    def text(data):
        if at[2] and len(value) < 64:
            value.append(data)

    parser = _parser(f"{label}: the worksheet holds a document type declaration; refused.")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    _stream(archive, part, parser, label)
    if scan.displayed is not None:
        scan.displayed.flush()
        scan.displayed.seek(0)
    return scan


def _display(scan: SheetScan, row: int, col: int, value: str, code: str) -> None:
    try:
        number = float(value)
    except ValueError:
        return
    shown = numfmt.render(number, code)
    if shown is None:
        return
    if scan.displayed is None:
        scan.displayed = tempfile.TemporaryFile(mode="w+", encoding="utf-8", newline="\n")
    scan.displayed.write(f"{row}\t{col}\t{shown}\n")
    scan.displayed_count += 1


def displayed_rows(scan: SheetScan):
    """(row, {col: text}) for every row with displayed texts, in row order (1-based rows and columns)."""
    if scan.displayed is None:
        return
    current, cells = None, {}
    for line in scan.displayed:
        row, col, shown = line.rstrip("\n").split("\t", 2)
        row = int(row)
        if current is not None and row != current:
            yield current, cells
            cells = {}
        current = row
        cells[int(col)] = shown
    if current is not None:
        yield current, cells
