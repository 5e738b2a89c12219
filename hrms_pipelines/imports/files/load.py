"""Validating and staging a file: pandas/Pandera on one reader, COPY on another, same bytes.

`load_file` creates the staging table, starts COPY in a thread (the server parses while Python
validates) and validates the same byte ranges of the same open file with pandas in chunks of text
cells (nothing is guessed or evaluated: `=SUM(A1)` stays that text) and the Pandera model, lazily:
every failing cell becomes a `Reject` (file, spreadsheet row, column, value, rule).

Append-aware: `load_file(..., start_offset=N)` stages and validates only the rows after byte N (with
the header), numbering them from `first_row_number` (default: the row after the prefix that
`inspect_file(prefix_size=N)` found), so rejects and the staging table's `row_number` carry the row
numbers of the whole file.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable, Iterator

import pandas as pd
import pandera.pandas as pa
import psycopg
from psycopg import sql

from hrms_pipelines.imports import schemas
from hrms_pipelines.imports.files.errors import ImportFileError, Reject, RejectReport
from hrms_pipelines.imports.files.inspect import FileInfo

CHUNK_ROWS = 100_000


def _first_row(info: FileInfo, start_offset: int | None, first_row_number: int | None) -> int:
    if first_row_number is not None:
        if first_row_number < 2:
            raise ValueError("first_row_number: the first data row is row 2 or later (the header is row 1)")
        return first_row_number
    if start_offset is None:
        return 2
    if start_offset == info.prefix_size and info.prefix_rows is not None:
        return info.prefix_rows + 2
    raise ImportFileError(f"{info.name}: reading from byte offset {start_offset:,} needs first_row_number, or "
                          f"inspect_file(path, prefix_size={start_offset}) finding that offset at a row end.")


def read_chunks(info: FileInfo, chunk_rows: int = CHUNK_ROWS, *, start_offset: int | None = None,
                first_row_number: int | None = None) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of text cells (blank = ''); index = spreadsheet row - 2 (row 2 -> 0)."""
    base = _first_row(info, start_offset, first_row_number) - 2
    reader = pd.read_csv(
        info.stream(start_offset), dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8",
        chunksize=chunk_rows, header=0, names=info.columns, index_col=False, engine="c",
    )
    with reader:
        for chunk in reader:
            if base:
                chunk.index = chunk.index + base
            yield chunk


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
    start_offset: int | None = None,
    first_row_number: int | None = None,
) -> int:
    """Validate every chunk lazily; rejects go to the report. Returns the number of data rows."""
    rows = 0
    first = _first_row(info, start_offset, first_row_number)
    chunks = read_chunks(info, chunk_rows, start_offset=start_offset, first_row_number=first)
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)   # pandas would drop extra cells
                chunk = next(chunks)
        except StopIteration:
            break
        except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
            raise ImportFileError(
                f"{info.name}: the CSV structure is broken in or after spreadsheet row {first + rows}: "
                f"{str(exc).rstrip('.')[:200]}. Check that row for too few or too many cells, or an unclosed quote."
            ) from None
        rows += len(chunk)
        validate_chunk(info, chunk, model, rejects, prepare=prepare)
    return rows


def validate_chunk(info: FileInfo, chunk: pd.DataFrame, model: type[pa.DataFrameModel], rejects,
                   *, prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> None:
    """One chunk, prepared then validated lazily: every bad cell a reject, in row and column order."""
    if prepare is not None:
        chunk = prepare(chunk)
    try:
        model.validate(chunk, lazy=True)
    except pa.errors.SchemaErrors as exc:
        rejects.extend(sorted(failures_to_rejects(info.name, chunk, exc), key=lambda r: (r.row or 0, r.column or "")))


def _staging_columns(info: FileInfo) -> list[str]:
    return [c if c not in info.extra else f"_extra_{i}" for i, c in enumerate(info.columns)]


def create_staging(conn: psycopg.Connection, table: str, info: FileInfo, *, first_row_number: int = 2) -> None:
    """A temporary table of text cells plus `row_number` (spreadsheet row - 1: row 2 -> 1)."""
    columns = _staging_columns(info)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (row_number bigint GENERATED ALWAYS AS IDENTITY (START WITH {}), {}) ON COMMIT DROP").format(
            sql.Identifier(table), sql.Literal(first_row_number - 1),
            sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
        )
    )


def copy_to_staging(conn: psycopg.Connection, table: str, info: FileInfo, *, start_offset: int | None = None) -> int:
    """Stream the file's bytes into the staging table (server-side CSV parsing). Returns rows copied."""
    columns = _staging_columns(info)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true, ENCODING 'UTF8')").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur:
        with cur.copy(statement) as copy, info.stream(start_offset) as stream:
            while block := stream.read1(1 << 20):
                copy.write(block)
        return cur.rowcount


def _privacy_table(model: type[pa.DataFrameModel]) -> str:
    """The privacy table of a file model: HistoryFile -> 'history' (see privacy.TABLE_COLUMNS)."""
    return model.__name__.removesuffix("File").lower()


def load_file(
    conn: psycopg.Connection,
    info: FileInfo,
    table: str,
    model: type[pa.DataFrameModel],
    rejects: RejectReport,
    *,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    start_offset: int | None = None,
    first_row_number: int | None = None,
) -> int:
    """Validate the file (Python) while COPY streams it into `table` (server); returns the row count.

    Cell rejects land in `rejects`; the caller decides (a stage fails on any reject, after its SQL
    checks have added theirs, so the user sees every problem of the file at once).
    With `start_offset`, only the rows after that byte offset are read (append-aware import).
    """
    first = _first_row(info, start_offset, first_row_number)
    rejects.attach(info, _privacy_table(model))
    create_staging(conn, table, info, first_row_number=first)
    outcome: dict = {}

    def run_copy() -> None:
        try:
            outcome["rows"] = copy_to_staging(conn, table, info, start_offset=start_offset)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run_copy, name=f"copy-{info.name}", daemon=True)
    worker.start()
    structure_error = None
    try:
        rows = validate_chunks(info, model, rejects, prepare=prepare, chunk_rows=chunk_rows,
                               start_offset=start_offset, first_row_number=first)
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
            f"{info.name}: the CSV structure is broken{where}: {primary[:200]}. "
            "Check that row for too few or too many cells, or an unclosed quote."
        ) from error
    if rows == 0:
        if start_offset is not None:
            raise ImportFileError(f"{info.name}: no data rows after byte offset {start_offset:,}; nothing to import.")
        raise ImportFileError(f"{info.name}: the file has a header but no data rows; nothing to import.")
    if outcome["rows"] != rows:
        raise ImportFileError(f"{info.name}: read {rows} data rows but the database parsed {outcome['rows']}; check quoting in the file.")
    return rows
