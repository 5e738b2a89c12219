"""Taking a backup: COPY every table from one snapshot, gzip, encrypt to the recipients, sign.

Each table is streamed `COPY ... TO STDOUT (FORMAT csv, HEADER)` -> gzip -> age -> a new 0600 file,
hashing the encrypted bytes on the way; memory stays flat. The folder is written as `.pending-<id>`
under its writer's lock and published (renamed to `<id>`) only when the manifest and its signature
are in it, by the caller that knows the backup is wanted: at once for take_backup, after commit for
a restore's pre-restore backup.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from hrms_pipelines.backups import crypto, fs
from hrms_pipelines.backups.catalog import root_of
from hrms_pipelines.backups.manifest import (
    FILE_SUFFIX, MANIFEST, SIGNATURE, BackupDiskFull, BackupError, BackupManifest, TableBackup,
)
from hrms_pipelines.backups.tables import TableShape, require_idle, set_copy_settings, table_shapes


def _export_table(conn: psycopg.Connection, shape: TableShape, path: Path, to, progress: crypto.Progress,
                  level: int) -> TableBackup:
    if shape.partitioned:  # COPY of a partitioned table needs the query form
        query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv, HEADER)").format(shape.column_list, shape.identifier)
    else:
        query = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT csv, HEADER)").format(shape.identifier, shape.column_list)
    cur = conn.cursor()
    with fs.create(path) as raw, cur.copy(query) as copy:
        source = crypto.GzipSource(copy, level)
        writer = crypto.CountingWriter(raw, progress)
        crypto.encrypt_stream(source, writer, to)
    return TableBackup(
        table=shape.table, rows=cur.rowcount, file=path.name, bytes=writer.bytes, sha256=writer.sha256.hexdigest(),
        columns=shape.columns, primary_key=shape.primary_key, csv_bytes=source.plain_bytes,
    )


def _describe_database(conn: psycopg.Connection) -> str:
    """Where the backup came from, without credentials."""
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


@dataclass
class PendingBackup:
    """A complete backup in its pending folder, its writer's lock held until publish() or discard()."""

    manifest: BackupManifest
    pending: Path
    _lock: int | None

    def publish(self) -> BackupManifest:
        try:
            fs.publish(self.pending, self.manifest.backup_id)
        finally:
            self._release()
        return self.manifest

    def discard(self) -> None:
        if self._lock is not None:
            fd, self._lock = self._lock, None
            fs.remove_locked(self.pending, fd)

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def write_pending(conn: psycopg.Connection, shapes: Sequence[TableShape], *, label: str, run_id: str | None,
                  root: Path, what: str) -> PendingBackup:
    """Export `shapes` inside the caller's transaction (which fixes the snapshot) into a new pending
    folder with its signed manifest. A disk-full error says where and how much; the folder is removed
    on any failure. `what` finishes the disk-full message (what became of the HR tables)."""
    to = crypto.recipients()  # a missing or bad key fails before any file is created
    crypto.sign(b"")  # likewise the signing key
    fs.make_root(root)
    short = re.sub(r"[^a-z0-9]", "", (run_id or "").lower())[:8] or "manual"
    backup_id, pending = fs.reserve(root, f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{short}")
    lock = fs.try_lock(pending)
    if lock is None:
        raise BackupError(f"cannot lock the new backup folder {pending}")
    progress = crypto.Progress()
    current = pending
    try:
        entries = []
        for shape in shapes:
            current = pending / f"{shape.table}{FILE_SUFFIX}"
            entries.append(_export_table(conn, shape, current, to, progress, crypto.COMPRESS_LEVEL))
        manifest = BackupManifest(
            backup_id=backup_id, directory=root / backup_id, created_at=datetime.now(UTC), run_id=run_id, label=label,
            database=_describe_database(conn), tables=tuple(entries), server_version=str(conn.info.server_version),
            recipients=tuple(str(r) for r in to),
        )
        body = json.dumps(manifest.to_json(), indent=2).encode()
        current = pending / SIGNATURE
        fs.write_new(pending / SIGNATURE, crypto.sign(body))
        current = pending / MANIFEST
        fs.write_new(pending / MANIFEST, body)
        fs.fsync_dir(pending)
    except BaseException as exc:
        fs.remove_locked(pending, lock)
        if fs.is_disk_full(exc):
            raise BackupDiskFull(
                f"backup {backup_id} ({label}) could not be written: the disk under the backup folder {root} is full "
                f"({os.strerror(exc.errno)}) after {progress.written:,} bytes of encrypted data were written, while "
                f"writing {current.name}. The partial backup was removed; {what}. Free space under {root} (or prune "
                "old backups with the prune_backups job) and run it again."
            ) from None
        raise
    return PendingBackup(manifest, pending, lock)


def take_backup(
    conn: psycopg.Connection,
    tables: Sequence[str],
    *,
    label: str,
    run_id: str | None,
    backup_root: Path | None = None,
) -> BackupManifest:
    """Export `tables` ("hrms.x" or "x", restorable ones only) from one consistent snapshot into a
    new, encrypted and signed backup folder, and publish it.

    `conn` (the reader role is enough) must not be inside a transaction: the export runs in its own
    REPEATABLE READ READ ONLY one.
    """
    require_idle(conn, "take_backup")
    root = root_of(backup_root)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        set_copy_settings(conn)
        shapes = table_shapes(conn, tables)
        pending = write_pending(conn, shapes, label=label, run_id=run_id, root=root,
                                what="nothing was written to the HR tables")
    return pending.publish()
