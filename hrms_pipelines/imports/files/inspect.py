"""`inspect_file`: open an import file once and learn everything about it in one streaming pass.

sha256 and size, what the file really is (a .csv that is gzip, xlsx, PDF, UTF-16/32 is refused
naming what it is), UTF-8 validity, the CSV structure (`scan`), the limits (`limits`), the header,
and for append-aware imports whether the file begins with the bytes of the previous one. The
returned `FileInfo` keeps the file open: every later pass reads the same inode through it.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hrms_pipelines import settings
from hrms_pipelines.imports.files import limits as limits_mod
from hrms_pipelines.imports.files import scan as scan_mod
from hrms_pipelines.imports.files import sniff, xlsx
from hrms_pipelines.imports.files import header as header_mod
from hrms_pipelines.imports.files.errors import ImportFileError, Reject, RejectReport
from hrms_pipelines.imports.files.source import OpenFile

BOM = codecs.BOM_UTF8
LISTED = scan_mod.LISTED


LimitExceeded = limits_mod.LimitExceeded


@dataclass
class FileInfo:
    path: Path
    sha256: str                          # the file's sha256; for a named sheet, sha256('<file sha256>#<sheet>')
    size: int
    columns: list[str]                   # normalised header (strip, lower case), in file order
    extra: list[str] = field(default_factory=list)
    file_sha256: str = ""                # sha256 of the file's bytes, always (what `sha256sum` prints)
    format: str = "csv"                  # csv | xlsx
    sheet: str | None = None             # the worksheet read (xlsx)
    rows: int = 0                        # data rows (header and trailing blank rows excluded)
    data_start: int = 0                  # where the header starts in the data stream (after a BOM)
    header_end: int = 0                  # where the first data row starts
    data_end: int = 0                    # where the last data row ends (trailing blank rows excluded)
    second_row: list[str] = field(default_factory=list, repr=False)   # normalised cells of row 2 (header hints)
    prefix_size: int | None = None       # append-aware: the size asked about ...
    prefix_sha256: str | None = None     # ... the sha256 of this file's first prefix_size bytes (None if shorter)
    prefix_rows: int | None = None       # ... data rows inside that prefix, when it ends exactly at a row end
    data: OpenFile | None = field(default=None, repr=False, compare=False)   # the open CSV bytes

    @property
    def name(self) -> str:
        return self.path.name

    def appends_to(self, size: int, sha256: str) -> bool:
        """True when this file is the file of `size` bytes and `sha256` with rows added after it: it
        begins with exactly those bytes, they end at a row end, and the header is among them. Needs
        `inspect_file(path, prefix_size=size)`. Only CSV files qualify (an .xlsx is rewritten whole)."""
        return (self.format == "csv" and self.prefix_size == size and self.prefix_sha256 == sha256
                and self.prefix_rows is not None and size <= self.size)

    @property
    def appended_rows(self) -> int | None:
        return None if self.prefix_rows is None else self.rows - self.prefix_rows

    def segments(self, start_offset: int | None = None) -> list[tuple[int, int]]:
        """Byte ranges of the data stream both readers read: header + rows (from `start_offset` on)."""
        if start_offset is None:
            return [(self.data_start, self.data_end)]
        if self.format != "csv":
            raise ImportFileError(f"{self.name}: only CSV files can be read from a byte offset (append-aware import).")
        if not self.header_end <= start_offset <= max(self.data_end, self.header_end):
            raise ImportFileError(f"{self.name}: byte offset {start_offset:,} is not inside the rows of the file "
                                  f"({self.header_end:,}..{self.data_end:,}).")
        return [(self.data_start, self.header_end), (start_offset, max(self.data_end, start_offset))]

    def stream(self, start_offset: int | None = None) -> io.BufferedReader:
        if self.data is None or self.data.closed:
            raise ImportFileError(f"{self.name}: the file is closed; inspect it again.")
        return self.data.reader(self.segments(start_offset))

    def numbered_rows(self) -> Iterator[tuple[int, list[str]]]:
        """(spreadsheet row, cells) of every row, header = row 1, verbatim."""
        text = io.TextIOWrapper(self.stream(), encoding="utf-8", newline="")
        for number, cells in enumerate(csv.reader(text), start=1):
            yield number, cells

    def close(self) -> None:
        if self.data is not None:
            self.data.close()


def normalise_header(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().lower().replace(" ", "_")


def _column(columns: list[str], index: int) -> str:
    letter = xlsx.column_letter(index)
    if index < len(columns):
        return f"column {columns[index]} ({letter})"
    return f"column {letter} (cell {index + 1}; the header has {len(columns)})"


def _open(path: Path, file_name: str):
    try:
        return settings.open_regular_file(path.parent, file_name, "import file")
    except settings.UnsafeName as exc:
        raise ImportFileError(str(exc)) from None
    except FileNotFoundError:
        raise ImportFileError(f"{file_name}: no such file in the import folder {path.parent}. Put the file there "
                              "or fix the file name in the run config.") from None
    except PermissionError as exc:
        raise ImportFileError(str(exc)) from None


def inspect_file(path: Path, *, prefix_size: int | None = None, limits: limits_mod.Limits | None = None) -> FileInfo:
    """sha256, size, format, UTF-8 check, structure and header of a file, in one streaming pass.

    `path` is the import folder / the name from the run config (`users.csv`, `users.xlsx`,
    `users.xlsx#Staff`). `prefix_size`: also hash the first `prefix_size` bytes and tell whether they
    end at a row end (`FileInfo.prefix_sha256`, `prefix_rows`, `appends_to`).
    """
    limits = limits or limits_mod.current()
    display = path.name
    file_name, sheet = xlsx.split_name(display)
    lower = file_name.lower()
    if lower.endswith(xlsx.OTHER_SPREADSHEETS):
        raise ImportFileError(f"{display}: {file_name.rsplit('.', 1)[-1]} workbooks are not read; save it as "
                              "'Excel Workbook (*.xlsx)' or as 'CSV UTF-8 (Comma delimited) (*.csv)' and import that file.")
    handle = _open(path, file_name)
    source = OpenFile(handle.fileno(), file_name, owner=handle)
    try:
        return _inspect(path, display, file_name, sheet, source, prefix_size, limits)
    except BaseException:
        source.close()
        raise


def _too_big(display: str, found: int, limits: limits_mod.Limits, read: bool) -> LimitExceeded:
    return LimitExceeded(
        f"{display}: the file {'has grown to more than' if read else 'is'} {found:,} bytes, over the limit of "
        f"{limits.file_bytes:,} bytes per import file ({limits_mod.MAX_FILE_BYTES_ENV}). "
        + limits_mod.how_to_raise(limits_mod.MAX_FILE_BYTES_ENV))


def _inspect(path, display, file_name, sheet, source: OpenFile, prefix_size, limits) -> FileInfo:
    size = source.size()
    if size > limits.file_bytes:
        raise _too_big(display, size, limits, read=False)
    is_xlsx = xlsx.is_xlsx(file_name)
    digest = hashlib.sha256()
    prefix = hashlib.sha256() if prefix_size is not None and prefix_size >= 0 else None
    scan = None
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    read = 0
    start = 0
    for block in source.blocks():
        if read == 0 and not is_xlsx:
            kind = sniff.what_is_it(block[:4096], source)
            if kind:
                raise ImportFileError(sniff.not_csv_message(display, kind))
            start = len(BOM) if block.startswith(BOM) else 0
            scan = scan_mod.CsvScan(start, limits, prefix_size)
        if read + len(block) > limits.file_bytes:
            raise _too_big(display, read + len(block), limits, read=True)
        digest.update(block)
        if prefix is not None and read < prefix_size:
            prefix.update(block[: prefix_size - read])
        if scan is not None:
            text = block[start:] if read == 0 else block
            _feed(scan, text, display, decoder, read + (start if read == 0 else 0), source)
        read += len(block)
    file_sha = digest.hexdigest()
    prefix_sha = prefix.hexdigest() if prefix is not None and read >= prefix_size else None
    if is_xlsx:
        data, sheet_name = xlsx.to_csv(source, display, sheet, limits)
        source.close()
        scan = scan_mod.CsvScan(0, limits)
        offset = 0
        for block in data.blocks():
            _feed(scan, block, display, None, offset, data)
            offset += len(block)
        sha = file_sha if sheet is None else hashlib.sha256(f"{file_sha}#{sheet_name}".encode()).hexdigest()
    else:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ImportFileError(f"{display}: not valid UTF-8: the file ends inside a multi-byte character "
                                  f"(byte offset {read}). Save the file as 'CSV UTF-8' and import again.") from None
        data, sheet_name, sha = source, None, file_sha
    if scan is None or scan.pos == scan.start:
        raise ImportFileError(f"{display}: the file is empty; it needs a header row and at least one data row.")
    try:
        scan.finish()
    except scan_mod._BlankHeader:
        raise ImportFileError(f"{display}: row 1 is blank; the column names (header) must be in row 1.") from None
    header = _cells(data, scan.start, scan.header_end)
    columns = [normalise_header(c) or f"(blank column {xlsx.column_letter(i)})" for i, c in enumerate(header)]
    problems = _structure_problems(scan, _nameable(columns))
    if problems:
        listed = "\n  - ".join(problems)
        raise ImportFileError(f"{display}: the CSV structure is broken; nothing was written:\n  - {listed}\n"
                              "Fix the file (a spreadsheet shows these rows and columns) and import again.")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates and _nameable(columns) is not columns:
        raise ImportFileError(f"{display}: row 1 does not look like a header: {header_mod.describe(header)}; it "
                              "repeats cells and holds data-shaped cells (an export without its header row?). "
                              "Add the header row and import again.")
    if duplicates:
        raise ImportFileError(f"{display}: row 1 (header) names column(s) "
                              f"{', '.join(settings.excerpt(d, 40) for d in duplicates[:LISTED])} more than once.")
    second = [normalise_header(c) for c in _cells(data, scan.header_end, min(scan.data_end, scan.header_end + scan_mod.HEADER_LIMIT))]
    prefix_rows = None
    if prefix_sha is not None and not is_xlsx and scan.prefix_records is not None and scan.prefix_records >= 1:
        prefix_rows = scan.prefix_records - 1
    return FileInfo(
        path=path, sha256=sha, size=read, columns=columns, file_sha256=file_sha, format="xlsx" if is_xlsx else "csv",
        sheet=sheet_name, rows=scan.data_rows, data_start=scan.start, header_end=scan.header_end,
        data_end=max(scan.data_end, scan.header_end), second_row=second, prefix_size=prefix_size,
        prefix_sha256=prefix_sha, prefix_rows=prefix_rows, data=data,
    )


def _feed(scan: scan_mod.CsvScan, block: bytes, display: str, decoder, offset: int, data: OpenFile) -> None:
    try:
        scan.feed(block)
    except scan_mod.CellTooLarge as exc:
        raise LimitExceeded(
            f"{display} row {exc.row}, {_column(_header(scan, data), exc.column)}: the cell holds at least "
            f"{exc.found:,} bytes, over the limit of {scan.limits.cell_bytes:,} bytes per cell "
            f"({limits_mod.MAX_CELL_BYTES_ENV}). If the cell is not meant to be this long, look for an unclosed quote "
            f"at its start. " + limits_mod.how_to_raise(limits_mod.MAX_CELL_BYTES_ENV)) from None
    except scan_mod.TooManyRows as exc:
        raise LimitExceeded(
            f"{display}: more than {scan.limits.rows:,} data rows (row {exc.row:,} is one too many), over the limit of "
            f"{scan.limits.rows:,} rows per import file ({limits_mod.MAX_ROWS_ENV}). "
            + limits_mod.how_to_raise(limits_mod.MAX_ROWS_ENV)) from None
    except scan_mod._HeaderTooLong as exc:
        raise ImportFileError(f"{display}: row 1 (header) is longer than {scan_mod.HEADER_LIMIT:,} bytes "
                              f"(at least {exc.size:,}); is this a CSV file with a header row?") from None
    except scan_mod._BlankHeader:
        raise ImportFileError(f"{display}: row 1 is blank; the column names (header) must be in row 1.") from None
    if decoder is None:
        return
    try:
        decoder.decode(block)
    except UnicodeDecodeError as exc:
        bad = offset + exc.start
        line = 1 + sum(b.count(b"\n") for b in data.blocks(0, bad))
        raise ImportFileError(
            f"{display}: not valid UTF-8: byte 0x{block[exc.start]:02x} at byte offset {bad} (line {line}) "
            f"cannot be decoded ({exc.reason}). Save the file as 'CSV UTF-8' and import again."
        ) from None


def _header(scan: scan_mod.CsvScan, data: OpenFile) -> list[str]:
    """The header's column names once the scan has passed it (else none: columns are named by letter)."""
    if not scan.header_done:
        return []
    return _nameable([normalise_header(c) for c in _cells(data, scan.start, scan.header_end)])


def _nameable(columns: list[str]) -> list[str]:
    """The header's names for messages; when row 1 holds data-shaped cells (a person, not column
    names), columns are named by position only ('#2'), never by what row 1 says."""
    if any(header_mod.data_shaped(c) for c in columns):
        return [f"#{i + 1}" for i in range(len(columns))]
    return columns


def _short(text: str, limit: int = 200) -> str:
    """Untrusted text shown in a message: escaped, cut to `limit` characters."""
    return (text[:limit] + ("…" if len(text) > limit else "")).encode("unicode_escape").decode("ascii")


def _cells(data: OpenFile, start: int, end: int) -> list[str]:
    if end <= start:
        return []
    text = data.pread(end - start, start).decode("utf-8", errors="replace")
    try:
        return next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error:
        return []


def _structure_problems(scan: scan_mod.CsvScan, columns: list[str]) -> list[str]:
    problems: list[str] = []

    def more(listed: scan_mod.Listed) -> str:
        return f" (and {listed.count - len(listed.items)} more)" if listed.count > len(listed.items) else ""

    if scan.unclosed and scan.last_open:
        row, column = scan.last_open
        problems.append(f"row {row}, {_column(columns, column)}: an unclosed quote: the double quote that opens this "
                        "cell is never closed, so everything after it to the end of the file would be one cell. Close "
                        "the quote, or double it (\"\") if it is part of the text.")
    for row, cells in scan.cells.items:
        expected = len(columns)
        if cells < expected:
            problems.append(f"row {row} has {cells} cells, the header has {expected}: too few cells (a comma or a "
                            "cell is missing, or the row was cut short)")
        else:
            problems.append(f"row {row} has {cells} cells, the header has {expected}: too many cells (a comma inside "
                            "a cell that is not in double quotes? write \"Accra, Ghana\" with the quotes)")
    if scan.cells.count > len(scan.cells.items):
        problems.append(f"... and {scan.cells.count - len(scan.cells.items)} more row(s) with too few or too many cells")
    if scan.quotes.count:
        where = "; ".join(f"row {r}, {_column(columns, c)}" for r, c in scan.quotes.items)
        problems.append(f"a double quote inside a cell that is not quoted as a whole, or text after a closing quote: "
                        f"{where}{more(scan.quotes)}. A cell that holds a double quote must be in double quotes "
                        "with the quote doubled: \"O\"\"Brien\"")
    if scan.nuls.count:
        where = "; ".join(f"row {r}, {_column(columns, c)} (byte offset {o})" for r, c, o in scan.nuls.items)
        problems.append(f"{scan.nuls.count} NUL byte(s) (the character \\0, which text never holds): {where}"
                        f"{more(scan.nuls)}. Remove them, or save the file again as 'CSV UTF-8'")
    if scan.lone_cr.count:
        where = "; ".join(f"row {r}, {_column(columns, c)}" for r, c in scan.lone_cr.items)
        problems.append(f"a carriage return (CR) that does not end a line: {where}{more(scan.lone_cr)}. Put the "
                        "cell in double quotes, or save the file with Windows (CRLF) or Unix (LF) line ends")
    crlf, lf = scan.line_ends["CRLF"], scan.line_ends["LF"]
    if crlf.count and lf.count:
        few, style, other = (crlf, "CRLF (Windows)", "LF (Unix)") if crlf.count < lf.count else (lf, "LF (Unix)", "CRLF (Windows)")
        problems.append(f"mixed line ends: most rows end with {other}, but rows "
                        f"{', '.join(map(str, few.items))}{more(few)} end with {style}. Save the file again from one program")
    if scan.blank_inside.count:
        problems.append(f"blank row(s) inside the file: row(s) {', '.join(map(str, scan.blank_inside.items))}"
                        f"{more(scan.blank_inside)}. Delete them (or fill them in); blank rows at the end of the file "
                        "are ignored")
    return problems


def check_columns(info: FileInfo, required: tuple[str, ...] | list[str], known: tuple[str, ...] | list[str],
                  warn: Callable[[str], None], rejects: RejectReport | None = None) -> None:
    """Missing or misspelled required columns fail, naming the nearest column found; extra ones warn.

    A row 1 that does not look like a header (an export without its header row: row 1 is a person)
    is described by the shape of its cells only; the row itself goes to `rejects`' 0600 file."""
    missing = [c for c in required if c not in info.columns]
    hint = ""
    if missing and all(c in info.second_row for c in missing):
        hint = (" Row 2 holds the column names: several header rows (or a title row above the header) are not "
                "supported; delete the rows above the column names so that they are in row 1.")
    if missing and not header_mod.looks_like_header(info.columns, known):
        raise _not_a_header(info, known, rejects, hint)
    if missing:
        problems = []
        for column in missing:
            near = difflib.get_close_matches(column, [c for c in info.columns if c not in known], n=1, cutoff=0.6)
            problems.append(f"'{column}'" + (f" (found {settings.excerpt(near[0])}: misspelled?)" if near else ""))
        raise ImportFileError(
            f"{info.name}: row 1 (header) is missing required column(s) {', '.join(problems)}. "
            f"Expected columns: {', '.join(known)}. Found (excerpt): {settings.excerpt(','.join(info.columns), 80)}.{hint}"
        )
    info.extra = [c for c in info.columns if c not in known]
    if info.extra:
        warn(f"{info.name}: ignoring extra column(s) {_short(', '.join(info.extra))} "
             f"(known columns: {', '.join(known)})")


def _not_a_header(info: FileInfo, known, rejects: RejectReport | None, hint: str) -> ImportFileError:
    cells = info.columns
    if info.data is not None and not info.data.closed and info.header_end > info.data_start:
        cells = _cells(info.data, info.data_start, info.header_end) or cells
    message = f"{info.name}: {header_mod.not_a_header_message(info.name, cells, known)}{hint}"
    if rejects is None or rejects.path is None:
        return ImportFileError(message)
    rejects.attach(info)
    rejects.add(Reject(info.name, 1, None, None, "does not look like a header (an export without its header row?): "
                       f"{header_mod.describe(cells)}"))
    rejects.close()
    return ImportFileError(f"{message}\nRow 1 is listed in full in {rejects.path} (readable by the service user only).",
                           rejects)
