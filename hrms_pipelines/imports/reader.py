"""Reading CSV files safely: encoding, header, chunked Pandera validation, COPY into staging.

A file goes through three passes, none of which holds the whole file in memory:
1. `inspect_file`: one streaming pass computing its sha256 and proving it is UTF-8 (a BOM and CRLF
   line ends are fine); the first undecodable byte is reported with its byte offset and line.
2. `validate_chunks`: pandas reads it in chunks of text cells (nothing is guessed or evaluated: a
   cell `=SUM(A1)` stays that text) and the Pandera model checks each chunk lazily; every failing
   cell becomes a `Reject` (file, spreadsheet row, column, value, rule).
3. `copy_to_staging`: the file's bytes are streamed to the server with COPY into a temporary table
   of text columns plus a row number, so SQL does the rest set-based. It runs in a thread while
   pass 2 runs, so the server parses while Python validates.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import psycopg
from psycopg import sql

from hrms_pipelines import settings
from hrms_pipelines.imports import schemas

BLOCK = 1 << 20
CHUNK_ROWS = 100_000
SHOWN_REJECTS = 20
BOM = codecs.BOM_UTF8


@dataclass(frozen=True)
class Reject:
    file: str
    row: int | None       # the row number a spreadsheet shows (header = row 1); None for the whole file
    column: str | None
    value: str | None
    rule: str

    def as_row(self) -> list:
        return [self.file, "" if self.row is None else self.row, self.column or "", self.value if self.value is not None else "", self.rule]

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        column = f", column {self.column}" if self.column else ""
        value = f", value {self.value!r}" if self.value is not None else ""
        return f"{self.file} {where}{column}{value}: {self.rule}"


REJECT_HEADERS = ["file", "row", "column", "value", "rule"]


class ImportFileError(Exception):
    """A file that cannot be imported. The message names file, row, column, value and rule."""

    def __init__(self, message: str, rejects: RejectReport | None = None):
        super().__init__(message)
        self.rejects = rejects


class RejectReport:
    """Every reject of a stage: the first few kept for logs and metadata, all of them in a CSV file."""

    def __init__(self, path: Path | None, shown: int = SHOWN_REJECTS):
        self.path = path
        self.shown = shown
        self.first: list[Reject] = []
        self.count = 0
        self._handle = None
        self._writer = None

    def add(self, reject: Reject) -> None:
        self.count += 1
        if len(self.first) < self.shown:
            self.first.append(reject)
        if self.path is not None:
            if self._writer is None:
                settings.private_dir(self.path.parent)
                self._handle = io.TextIOWrapper(settings.create_private_file(self.path), newline="", encoding="utf-8")
                self._writer = csv.writer(self._handle)
                self._writer.writerow(REJECT_HEADERS)
            self._writer.writerow(reject.as_row())

    def extend(self, rejects) -> None:
        for reject in rejects:
            self.add(reject)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def message(self, what: str) -> str:
        self.close()
        lines = [f"{what}: {self.count} problem(s); nothing was written."]
        lines += [f"  - {r}" for r in self.first]
        if self.count > len(self.first):
            lines.append(f"  ... and {self.count - len(self.first)} more")
        if self.path is not None and self.count:
            lines.append(f"Every problem is listed in {self.path}")
        lines.append("Fix the file(s) and run the import again.")
        return "\n".join(lines)


@dataclass
class FileInfo:
    path: Path
    sha256: str
    size: int
    columns: list[str]                   # normalised header (strip, lower case), in file order
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def normalise_header(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().lower().replace(" ", "_")


def inspect_file(path: Path) -> FileInfo:
    """sha256, size, UTF-8 check and header of a file, in one streaming pass."""
    try:
        handle = settings.open_regular_file(path.parent, path.name, "import file")
    except settings.UnsafeName as exc:
        raise ImportFileError(str(exc)) from None
    except FileNotFoundError:
        raise ImportFileError(f"{path.name}: no such file in the import folder {path.parent}. Put the file there "
                              "or fix the file name in the run config.") from None
    except PermissionError as exc:
        raise ImportFileError(str(exc)) from None
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    lines = 1
    size = 0
    head = b""
    with handle:
        while block := handle.read(BLOCK):
            if size == 0:
                if block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise ImportFileError(f"{path.name}: the file is UTF-16 encoded (byte order mark at byte 0); save it as 'CSV UTF-8' and import again.")
            digest.update(block)
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad = size + exc.start
                line = lines + block[: exc.start].count(b"\n")
                raise ImportFileError(
                    f"{path.name}: not valid UTF-8: byte 0x{block[exc.start]:02x} at byte offset {bad} (line {line}) "
                    f"cannot be decoded ({exc.reason}). Save the file as 'CSV UTF-8' and import again."
                ) from None
            if len(head) < 65536:
                head += block[: 65536 - len(head)]
            lines += block.count(b"\n")
            size += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportFileError(f"{path.name}: not valid UTF-8: the file ends inside a multi-byte character (byte offset {size}).") from None
    text = head.decode("utf-8", errors="ignore")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise ImportFileError(f"{path.name}: the file is empty; it needs a header row and at least one data row.")
    header = next(csv.reader([text.splitlines()[0]]))
    columns = [normalise_header(c) for c in header]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ImportFileError(f"{path.name}: row 1 (header) names column(s) {', '.join(duplicates)} more than once.")
    return FileInfo(path=path, sha256=digest.hexdigest(), size=size, columns=columns)


def check_columns(info: FileInfo, required: tuple[str, ...] | list[str], known: tuple[str, ...] | list[str], warn: Callable[[str], None]) -> None:
    """Missing or misspelled required columns fail, naming the nearest column found; extra ones warn."""
    missing = [c for c in required if c not in info.columns]
    if missing:
        problems = []
        for column in missing:
            near = difflib.get_close_matches(column, [c for c in info.columns if c not in known], n=1, cutoff=0.6)
            problems.append(f"'{column}'" + (f" (found {settings.excerpt(near[0])}: misspelled?)" if near else ""))
        raise ImportFileError(
            f"{info.name}: row 1 (header) is missing required column(s) {', '.join(problems)}. "
            f"Expected columns: {', '.join(known)}. Found (excerpt): {settings.excerpt(','.join(info.columns), 80)}."
        )
    info.extra = [c for c in info.columns if c not in known]
    if info.extra:
        warn(f"{info.name}: ignoring extra column(s) {', '.join(info.extra)} (known columns: {', '.join(known)})")


def read_chunks(info: FileInfo, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of text cells (blank = ''), index = data row index across chunks."""
    reader = pd.read_csv(
        info.path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
        chunksize=chunk_rows, header=0, names=info.columns, index_col=False, engine="c",
    )
    with reader:
        yield from reader


def failures_to_rejects(file: str, chunk: pd.DataFrame, error: pa.errors.SchemaErrors) -> Iterator[Reject]:
    cases = error.failure_cases
    for case in cases.itertuples(index=False):
        index = case.index
        row = None if index is None or pd.isna(index) else int(index) + 2
        column = case.column if case.schema_context == "Column" else None
        rule = str(case.check)
        if column is None:
            column, rule = schemas.rule_column(rule)
        if case.check == "column_in_dataframe":
            yield Reject(file, None, str(case.failure_case), None, "required column is missing")
            continue
        value = None
        if row is not None and column in chunk.columns:
            value = chunk.at[index, column]
        elif case.schema_context == "Column":
            value = str(case.failure_case)
        yield Reject(file, row, column, value, rule)


def validate_chunks(
    info: FileInfo,
    model: type[pa.DataFrameModel],
    rejects: RejectReport,
    *,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Validate every chunk lazily; rejects go to the report. Returns the number of data rows."""
    rows = 0
    chunks = read_chunks(info, chunk_rows)
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)   # pandas would drop extra cells
                chunk = next(chunks)
        except StopIteration:
            break
        except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
            raise ImportFileError(
                f"{info.name}: the CSV structure is broken in or after spreadsheet row {rows + 2}: "
                f"{str(exc).rstrip('.')}. Check for a row with more cells than the header or an unclosed quote."
            ) from None
        rows += len(chunk)
        if prepare is not None:
            chunk = prepare(chunk)
        try:
            model.validate(chunk, lazy=True)
        except pa.errors.SchemaErrors as exc:
            rejects.extend(sorted(failures_to_rejects(info.name, chunk, exc), key=lambda r: (r.row or 0, r.column or "")))
    return rows


def _staging_columns(info: FileInfo) -> list[str]:
    return [c if c not in info.extra else f"_extra_{i}" for i, c in enumerate(info.columns)]


def create_staging(conn: psycopg.Connection, table: str, info: FileInfo) -> None:
    columns = _staging_columns(info)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (row_number bigint GENERATED ALWAYS AS IDENTITY, {}) ON COMMIT DROP").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
        )
    )


def copy_to_staging(conn: psycopg.Connection, table: str, info: FileInfo) -> int:
    """Stream the file's bytes into the staging table (server-side CSV parsing). Returns rows copied."""
    columns = _staging_columns(info)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true, ENCODING 'UTF8')").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur:
        with cur.copy(statement) as copy, info.path.open("rb") as handle:
            first = True
            while block := handle.read(BLOCK):
                if first and block.startswith(BOM):
                    block = block[len(BOM):]
                first = False
                copy.write(block)
        return cur.rowcount


def load_file(
    conn: psycopg.Connection,
    info: FileInfo,
    table: str,
    model: type[pa.DataFrameModel],
    rejects: RejectReport,
    *,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Validate the file (Python) while COPY streams it into `table` (server); returns the row count.

    Cell rejects land in `rejects`; the caller decides (a stage fails on any reject, after its SQL
    checks have added theirs, so the user sees every problem of the file at once).
    """
    create_staging(conn, table, info)
    outcome: dict = {}

    def run_copy() -> None:
        try:
            outcome["rows"] = copy_to_staging(conn, table, info)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run_copy, name=f"copy-{info.name}", daemon=True)
    worker.start()
    structure_error = None
    try:
        rows = validate_chunks(info, model, rejects, prepare=prepare, chunk_rows=chunk_rows)
    except ImportFileError as exc:
        structure_error = exc      # the server's COPY error, when there is one, names the exact line
    finally:
        worker.join()
    if structure_error is not None and "error" not in outcome:
        raise structure_error
    if "error" in outcome:
        error = outcome["error"]
        if rejects.count:
            raise ImportFileError(rejects.message(f"{info.name} cannot be imported"), rejects) from error
        context = getattr(getattr(error, "diag", None), "context", None) or ""
        line = re.search(r"line (\d+)", context)
        where = f" at line {line.group(1)}" if line else ""
        primary = getattr(getattr(error, "diag", None), "message_primary", None) or str(error)
        raise ImportFileError(
            f"{info.name}: the CSV structure is broken{where}: {primary}. "
            "Check for a row with more cells than the header or an unclosed quote."
        ) from error
    if rows == 0:
        raise ImportFileError(f"{info.name}: the file has a header but no data rows; nothing to import.")
    if outcome["rows"] != rows:
        raise ImportFileError(f"{info.name}: read {rows} data rows but the database parsed {outcome['rows']}; check quoting in the file.")
    return rows
