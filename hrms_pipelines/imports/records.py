"""Import records: one row per imported file in hrms.imports_importrecord (sha256, options, counts,
run id, outcome). A file whose sha256 and options match an earlier successful import is recognised
at once as unchanged."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from hrms_pipelines.imports.reader import FileInfo

TABLE = "hrms.imports_importrecord"


def previous_success(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict) -> int | None:
    """The id of the latest successful import of this exact file with these options, if any."""
    row = conn.execute(
        f"SELECT id FROM {TABLE} WHERE stage = %s AND file_sha256 = %s AND options = %s "
        "AND outcome = 'succeeded' ORDER BY id DESC LIMIT 1",
        [stage, info.sha256, Jsonb(options)],
    ).fetchone()
    return row[0] if row else None


def start(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict, run_id: str | None) -> int:
    return conn.execute(
        f"INSERT INTO {TABLE} (stage, file_name, file_sha256, file_bytes, run_id, options, outcome) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'running') RETURNING id",
        [stage, info.name, info.sha256, info.size, run_id, Jsonb(options)],
    ).fetchone()[0]


def finish(conn: psycopg.Connection, record_id: int, outcome: str, counts: dict, message: str | None = None) -> None:
    conn.execute(
        f"UPDATE {TABLE} SET outcome = %s, rows_read = %s, inserted = %s, updated = %s, unchanged = %s, "
        "skipped = %s, rejected = %s, message = %s, finished_at = clock_timestamp() WHERE id = %s",
        [outcome, counts.get("rows_read", 0), counts.get("inserted", 0), counts.get("updated", 0),
         counts.get("unchanged", 0), counts.get("skipped", 0), counts.get("rejected", 0), message, record_id],
    )


def record_outcome(conn: psycopg.Connection, stage: str, info: FileInfo, options: dict, run_id: str | None,
                   outcome: str, counts: dict, message: str | None = None) -> int:
    """A finished record in one go (unchanged files, and failures written after the rollback)."""
    record_id = start(conn, stage, info, options, run_id)
    finish(conn, record_id, outcome, counts, message[:4000] if message else None)
    return record_id


def last_success_by_file(conn: psycopg.Connection) -> dict[str, tuple[str, int]]:
    """file name -> (sha256, record id) of its latest succeeded or unchanged import."""
    rows = conn.execute(
        f"SELECT DISTINCT ON (file_name) file_name, file_sha256, id FROM {TABLE} "
        "WHERE outcome IN ('succeeded', 'unchanged') ORDER BY file_name, id DESC"
    ).fetchall()
    return {name: (sha, record_id) for name, sha, record_id in rows}

