"""Append-aware files: when a file begins with exactly the bytes of the file last imported
successfully under its name for the stage (same options), only the rows after them are read,
validated and merged.

The import record of a successful import keeps the file's sha256, size and data rows. The next
import of the same name asks the reader (`inspect_file(path, prefix_size=<that size>)`) for the
sha256 of the new file's first that-many bytes, in the same streaming pass that hashes the whole
file; `FileInfo.appends_to(size, sha256)` is true only when they are the same bytes and end at a
row end. Then `load_file(..., start_offset=<size>, first_row_number=<rows + 2>)` stages the tail
alone, numbered as in the whole file. Any other change -- a changed row, a truncated file, a file
of the same size with other bytes, one that begins like an older import but not the last
successful one, other options -- takes the full path.

One more condition makes the tail path give what the full path would: every row of the tail must be
new. A tail row whose key the table already holds may repeat a row of the earlier part of the file
(the full path rejects that as a duplicate in the file), so such a tail sends the file the full way
(the stage's `append_guard` says which keys; the reason is logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from hrms_pipelines.imports import shortcuts
from hrms_pipelines.imports.context import Context, FileOutcome, StageSpec

if TYPE_CHECKING:
    from hrms_pipelines.imports.reader import FileInfo


@dataclass(frozen=True)
class Previous:
    """The last successful import of a file name for a stage."""

    record_id: int
    size: int
    sha256: str
    rows: int | None
    options: dict


@dataclass(frozen=True)
class Tail:
    offset: int              # the earlier file's size: the tail starts at this byte
    first_row_number: int    # spreadsheet row of the tail's first row
    previous_rows: int       # data rows of the earlier file
    previous_record: int     # its import record
    rows: int                # rows appended


def previous_imports(conn: psycopg.Connection, stage: str, names: list[str]) -> dict[str, Previous]:
    """name -> the last successful import of that file for `stage` (an undone one does not count, nor
    one whose word an undo or restore took back since: hrms_pipelines.imports.shortcuts)."""
    if not names:
        return {}
    rows = conn.execute(
        "SELECT DISTINCT ON (r.file_name) r.file_name, r.id, r.file_bytes, r.file_sha256, r.file_rows, r.options "
        "FROM hrms.imports_importrecord r WHERE r.stage = %s AND r.file_name = ANY(%s) AND r.outcome = 'succeeded' "
        f"AND {shortcuts.vouches('r')} ORDER BY r.file_name, r.id DESC", [stage, names]).fetchall()
    return {name: Previous(rid, size, sha, file_rows, options) for name, rid, size, sha, file_rows, options in rows
            if size is not None}


def prefix_sizes(previous: dict[str, Previous], stage: StageSpec) -> dict[str, int]:
    """What to ask inspect_file for, per file name: the earlier file's size (stages that append)."""
    if stage.append_guard is None:
        return {}
    return {name: p.size for name, p in previous.items() if p.rows is not None}


def plan(ctx: Context, stage: StageSpec, infos: list[FileInfo], options: dict) -> None:
    """Decide, per file, whether only its appended tail is read (ctx.tails); log which path and why."""
    if stage.append_guard is None:
        return
    previous = previous_imports(ctx.conn, stage.name, [i.name for i in infos])
    for info in infos:
        before = previous.get(info.name)
        if before is None or before.rows is None:
            continue
        if before.options != options:
            ctx.log.info(f"{info.name}: full path (the last import of this file, record #{before.record_id}, had other options)")
            continue
        if info.prefix_size != before.size or not info.appends_to(before.size, before.sha256) or not info.appended_rows:
            ctx.log.info(f"{info.name}: full path (it does not begin with exactly the {before.size:,} bytes of the file "
                         f"last imported, record #{before.record_id})")
            continue
        ctx.tails[info.name] = Tail(offset=before.size, first_row_number=before.rows + 2, previous_rows=before.rows,
                                    previous_record=before.record_id, rows=info.appended_rows)
        file = ctx.file_result(info.name)
        file.path = "appended"
        file.appended_to = before.record_id
        ctx.log.info(f"{info.name}: {describe(file, ctx.tails[info.name])}: only the new rows are read, validated and merged")


def fall_back(ctx: Context, info: FileInfo, reason: str) -> None:
    """Take the full path after all (the tail was staged and found wanting)."""
    ctx.tails.pop(info.name, None)
    file = ctx.file_result(info.name)
    file.path = "full"
    file.appended_to = None
    ctx.log.info(f"{info.name}: full path after all: {reason}")


def describe(file: FileOutcome, tail: Tail | None = None) -> str:
    """'appended 1,000 rows to a file of 1,000,000 rows (import record #12)'."""
    if tail is not None:
        return f"appended {tail.rows:,} rows to a file of {tail.previous_rows:,} rows (import record #{tail.previous_record})"
    if file.file_rows is not None and file.counts.get("rows_read") is not None and file.appended_to:
        earlier = file.file_rows - file.counts["rows_read"]
        return (f"appended {file.counts['rows_read']:,} rows to a file of {earlier:,} rows "
                f"(import record #{file.appended_to})")
    return "full"


def new_keys_guard(query: str):
    """An append_guard from a query over the staged tail (`{staging}`) returning how many of its rows
    name a key the table already holds."""
    def guard(ctx: Context, info: FileInfo, staging: str) -> str | None:
        found = ctx.conn.execute(query.format(staging=staging)).fetchone()[0]
        if found:
            return (f"{found:,} appended row(s) name a key the table already holds (a repeat of an earlier row "
                    "is rejected on the full path, not merged)")
        return None
    return guard
