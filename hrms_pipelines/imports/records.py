"""Import records: one row per imported file in hrms.imports_importrecord (sha256, options, counts,
run id, outcome). A file whose sha256 and options match an earlier successful import is recognised
at once as unchanged; an import that was undone (outcome 'undone') no longer counts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from hrms_pipelines.imports import shortcuts
from hrms_pipelines.imports.reader import FileInfo

TABLE = "hrms.imports_importrecord"


def previous_success(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict) -> int | None:
    """The id of the latest successful import of this exact file with these options, if any, and only
    while its word still holds: no undo or restore since (hrms_pipelines.imports.shortcuts), and no later
    import of the stage that updated rows. (File A, then B editing a salary, then A again: the third
    import must put A's salary back, not be "unchanged".)"""
    row = conn.execute(
        f"SELECT r.id FROM {TABLE} r WHERE r.stage = %s AND r.file_sha256 = %s AND r.options = %s "
        f"AND r.outcome = 'succeeded' AND {shortcuts.vouches('r')} "
        f"AND NOT EXISTS (SELECT FROM {TABLE} l WHERE l.stage = r.stage AND l.id > r.id AND l.outcome = 'succeeded' "
        f"AND l.updated > 0) ORDER BY r.id DESC LIMIT 1",
        [stage, info.sha256, Jsonb(options)],
    ).fetchone()
    return row[0] if row else None


def start(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict, run_id: str | None) -> int:
    return conn.execute(
        f"INSERT INTO {TABLE} (stage, file_name, file_sha256, file_bytes, run_id, options, outcome) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'running') RETURNING id",
        [stage, info.name, info.sha256, info.size, run_id, Jsonb(options)],
    ).fetchone()[0]


def finish(conn: psycopg.Connection, record_id: int, outcome: str, counts: dict, message: str | None = None,
           *, file_rows: int | None = None, appended_to: int | None = None) -> None:
    """Its outcome and counts; for a success also the file's data rows (an appended file's next import
    numbers its new rows from there) and, when only an appended tail was read, the record it extends."""
    conn.execute(
        f"UPDATE {TABLE} SET outcome = %s, rows_read = %s, inserted = %s, updated = %s, unchanged = %s, "
        "skipped = %s, rejected = %s, message = %s, file_rows = %s, appended_to = %s, finished_at = clock_timestamp() "
        "WHERE id = %s",
        [outcome, counts.get("rows_read", 0), counts.get("inserted", 0), counts.get("updated", 0),
         counts.get("unchanged", 0), counts.get("skipped", 0), counts.get("rejected", 0), storable(message),
         file_rows, appended_to, record_id],
    )


MESSAGE_LIMIT = 4000


def storable(message: str | None) -> str | None:
    """A message PostgreSQL can store whatever it holds: NUL bytes (which text cannot hold) written
    as \\x00, characters UTF-8 cannot encode escaped, at most MESSAGE_LIMIT characters."""
    if message is None:
        return None
    text = message.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 20] + " ... (cut)"


def record_outcome(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict, run_id: str | None,
                   outcome: str, counts: dict, message: str | None = None) -> int:
    """A finished record in one go (unchanged files, and failures written after the rollback)."""
    record_id = start(conn, stage, info, options, run_id)
    finish(conn, record_id, outcome, counts, message)
    return record_id


UNREADABLE_SHA256 = "0" * 64


def file_identity(path: Path, expected_size: int | None = None) -> tuple[str, int] | None:
    """(sha256, size) of a file's bytes as they are, opened safely (a plain name, no symlink, a
    regular file); None when it cannot be opened, or when `expected_size` is given and the file has
    another size (then it is not hashed at all)."""
    from hrms_pipelines import settings

    try:
        with settings.open_regular_file(path.parent, path.name, "import file") as handle:
            if expected_size is not None and os.fstat(handle.fileno()).st_size != expected_size:
                return None
            digest, size = hashlib.sha256(), 0
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
            return digest.hexdigest(), size
    except (OSError, ValueError):
        return None


def _raw_identity(path: Path) -> tuple[str, int | None]:
    """sha256 and size of a file that failed inspection; zeros when it cannot be opened at all
    (missing, a symlink, not a regular file, a bad name)."""
    return file_identity(path) or (UNREADABLE_SHA256, None)


def record_unread(conn: psycopg.Connection, stage: str, path: Path, options: dict, run_id: str | None, message: str) -> int:
    """A failed record for a file the stage could not even read (encoding, header, missing, unsafe)."""
    sha, size = _raw_identity(path)
    name = path.name if path.name.strip() else "(no name)"
    record_id = conn.execute(
        f"INSERT INTO {TABLE} (stage, file_name, file_sha256, file_bytes, run_id, options, outcome) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'running') RETURNING id",
        [stage, storable(name), sha, size, run_id, Jsonb(options)],
    ).fetchone()[0]
    finish(conn, record_id, "failed", {}, message)
    return record_id


def last_success_by_file(conn: psycopg.Connection) -> dict[str, tuple[str, int]]:
    """file name -> (sha256, record id) of its latest successful import (an undone one does not count;
    'unchanged' records only repeat a successful one; one an undo or restore took back does not count)."""
    rows = conn.execute(
        f"SELECT DISTINCT ON (r.file_name) r.file_name, r.file_sha256, r.id FROM {TABLE} r "
        f"WHERE r.outcome = 'succeeded' AND {shortcuts.vouches('r')} ORDER BY r.file_name, r.id DESC"
    ).fetchall()
    return {name: (sha, record_id) for name, sha, record_id in rows}

