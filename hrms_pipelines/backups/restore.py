"""Restoring a backup exactly, in one transaction, as the restorer role.

Before the transaction: the backup folder's lock is taken (shared: pruning cannot remove it while it
is read), the manifest's signature and every file's size and sha256 are checked, and the configured
identity must open every file; a wrong or missing key, an unsigned or foreign backup, a table that
is not restorable: refused here, nothing staged.

Then in ONE transaction:

1. the advisory locks `restore` and `imports` (no import runs meanwhile), and the tables in EXCLUSIVE
   mode (readers go on, writers wait; `lock_timeout` bounds our wait);
2. the pre-restore backup of the same tables, from the very snapshot the restore replaces, written
   into a pending folder: it is published after the commit, and removed when the restore rolls back
   (a restore killed mid-way leaves a pending folder that `settle_pending` removes: its audit rows
   never committed);
3. each file streams file -> age -> gunzip -> COPY into a temporary staging table, held to the
   manifest as it streams: the encrypted bytes, the CSV bytes and the rows (counted outside quoted
   fields) are refused at the first excess, before the rest is read; sha256 and counts are checked
   again at the end of each file;
4. in ONE statement: deletes the rows that differ from the backup (or are not in it; compared byte
   for byte with record_image_eq), then inserts the backup rows that are missing. PostgreSQL checks
   non-deferrable foreign keys at the end of a statement, so the order of tables does not matter,
   cycles (team leader <-> employee's team) are fine, and rows of other tables that reference a
   replaced row stay valid (same key at the end). A row that exists now but not in the backup and is
   still referenced from a table outside the backup stops the restore: nothing is changed;
5. checks that every table now equals its staging copy, row for row, raises identity sequences to
   max(id), and writes one audit-log row (action 'restore') per table, naming the pre-restore backup.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from hrms_pipelines import locks
from hrms_pipelines.backups import catalog, crypto, fs
from hrms_pipelines.backups.export import PendingBackup, write_pending
from hrms_pipelines.backups.manifest import BackupError, BackupManifest, TableBackup
from hrms_pipelines.backups.tables import TableShape, require_idle, set_copy_settings, table_shapes
from hrms_pipelines.imports import shortcuts
from hrms_pipelines.metadata import markdown_table

DEFAULT_LOCK_TIMEOUT = "10s"
# Largest piece of decompressed CSV handed to COPY at once (a decompression bomb never gets further).
_PIECE = 256 << 10


@dataclass(frozen=True)
class TableRestore:
    table: str
    rows_before: int
    rows_after: int
    inserted: int
    updated: int
    deleted: int

    @property
    def unchanged(self) -> int:
        return self.rows_after - self.inserted - self.updated


@dataclass
class RestoreResult:
    backup_id: str
    dry_run: bool
    pre_restore_backup: BackupManifest | None
    tables: list[TableRestore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pre_restore_backup_id(self) -> str | None:
        return self.pre_restore_backup.backup_id if self.pre_restore_backup else None

    def counts(self) -> dict[str, TableRestore]:
        return {t.table: t for t in self.tables}

    def table_markdown(self) -> str:
        """A row per table: rows before and after, inserted, updated, deleted, unchanged."""
        rows = [[t.table, t.rows_before, t.rows_after, t.inserted, t.updated, t.deleted, t.unchanged] for t in self.tables]
        return markdown_table(["table", "rows before", "rows after", "inserted", "updated", "deleted", "unchanged"], rows)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "backup_id": dg.MetadataValue.text(self.backup_id),
            "dry_run": dg.MetadataValue.bool(self.dry_run),
            "pre_restore_backup_id": dg.MetadataValue.text(self.pre_restore_backup_id or "none"),
            "restored_tables": dg.MetadataValue.md(self.table_markdown()),
            "rows_inserted": dg.MetadataValue.int(sum(t.inserted for t in self.tables)),
            "rows_updated": dg.MetadataValue.int(sum(t.updated for t in self.tables)),
            "rows_deleted": dg.MetadataValue.int(sum(t.deleted for t in self.tables)),
            "seconds": dg.MetadataValue.float(round(self.seconds, 3)),
        }


def _check_restorable(conn: psycopg.Connection, manifest: BackupManifest) -> list[TableShape]:
    """The tables as they are now must have the backup's columns, and nothing that would turn our
    deletes and inserts into changes elsewhere (cascading foreign keys, user triggers). The project's
    own `hrms_guard_*` triggers only refuse changes (a finished import record is final), never make
    any: they stay out of the way of a restore's deletes and inserts."""
    try:
        shapes = table_shapes(conn, [t.table for t in manifest.tables])
    except BackupError as exc:
        raise BackupError(f"backup {manifest.backup_id} cannot be restored: {exc}") from None
    for shape, entry in zip(shapes, manifest.tables, strict=True):
        if shape.columns != entry.columns:
            now = ", ".join(f"{c.name} {c.type}" for c in shape.columns)
            then = ", ".join(f"{c.name} {c.type}" for c in entry.columns)
            raise BackupError(
                f"backup {manifest.backup_id} cannot be restored: {entry.table} has changed since the backup "
                f"(columns now: {now}; in the backup: {then}). Restore into the schema of the backup "
                "(revert the migration first) or restore by hand."
            )
        if shape.primary_key != entry.primary_key:
            raise BackupError(f"backup {manifest.backup_id}: the primary key of {entry.table} has changed since the backup")
    names = [t.table for t in manifest.tables]
    hazards = conn.execute(
        r"""
        SELECT format('%%s: foreign key %%s from %%s is ON DELETE %%s', c.confrelid::regclass, c.conname,
                      c.conrelid::regclass,
                      CASE c.confdeltype WHEN 'r' THEN 'RESTRICT' WHEN 'c' THEN 'CASCADE'
                                         WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END)
        FROM pg_constraint c
        WHERE c.contype = 'f' AND c.confdeltype <> 'a'
          AND c.confrelid IN (SELECT to_regclass(t) FROM unnest(%(names)s::text[]) t)
        UNION ALL
        SELECT format('%%s: trigger %%s', t.tgrelid::regclass, t.tgname)
        FROM pg_trigger t
        WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgname NOT LIKE 'hrms\_guard\_%%'
          AND t.tgrelid IN (SELECT to_regclass(t) FROM unnest(%(names)s::text[]) t)
        """,
        {"names": names},
    ).fetchall()
    if hazards:
        raise BackupError(
            f"backup {manifest.backup_id} cannot be restored exactly: replacing rows would act beyond them ("
            + "; ".join(h[0] for h in hazards) + "). Restore by hand."
        )
    return shapes


def _stage_name(i: int) -> sql.Identifier:
    return sql.Identifier(f"_hrms_restore_{i}")


class _CsvRecords:
    """Counts CSV records (line ends outside quoted fields) of PostgreSQL's CSV as it streams."""

    def __init__(self) -> None:
        self.records = 0
        self.quoted = False

    def feed(self, data: bytes) -> None:
        if not self.quoted and b'"' not in data:
            self.records += data.count(b"\n")
            return
        # the pieces between quotes alternate outside/inside a quoted field ("" inside one toggles twice)
        parts = data.split(b'"')
        self.records += b"".join(parts[1::2] if self.quoted else parts[0::2]).count(b"\n")
        if len(parts) % 2 == 0:  # an odd number of quotes: the state at the end is flipped
            self.quoted = not self.quoted


class _StagingSink:
    """Where age writes the decrypted file: gunzip, held to the manifest's CSV bytes and rows, into COPY."""

    def __init__(self, copy, manifest: BackupManifest, entry: TableBackup, reader: catalog.HashingReader) -> None:
        self.copy, self.manifest, self.entry, self.reader = copy, manifest, entry, reader
        self.unzip = zlib.decompressobj(31)
        self.csv_bytes = 0
        self.records = _CsvRecords()
        self.error: BaseException | None = None

    def _refuse(self, what: str, limit: int) -> BackupError:
        path = self.manifest.directory / self.entry.file
        return BackupError(
            f"backup {self.manifest.backup_id}: {path} holds more {what} than the {limit:,} its manifest lists; "
            f"refused as soon as it passed that count, before the excess was staged, after reading "
            f"{self.reader.bytes:,} of {self.entry.bytes:,} encrypted bytes. Nothing was changed."
        )

    def _take(self, piece: bytes) -> None:
        self.csv_bytes += len(piece)
        if self.csv_bytes > self.entry.csv_bytes:
            raise self._refuse("CSV bytes", self.entry.csv_bytes)
        self.records.feed(piece)
        if self.records.records - 1 > self.entry.rows:  # the first record is the header
            raise self._refuse("rows", self.entry.rows)
        self.copy.write(piece)

    def write(self, data: bytes) -> int:
        try:
            if self.unzip.eof:
                if data:
                    raise BackupError(f"{self.entry.file}: data after the end of the gzip stream")
                return 0
            piece = self.unzip.decompress(data, _PIECE)
            while True:
                if piece:
                    self._take(piece)
                if not self.unzip.unconsumed_tail or self.unzip.eof:
                    break
                piece = self.unzip.decompress(self.unzip.unconsumed_tail, _PIECE)
            if self.unzip.eof and self.unzip.unused_data:
                raise BackupError(f"{self.entry.file}: data after the end of the gzip stream")
            return len(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if not self.unzip.eof:
            raise BackupError(f"backup {self.manifest.backup_id}: {self.entry.file} ends before its gzip stream does")


def _load_staging(conn: psycopg.Connection, manifest: BackupManifest, shapes: Sequence[TableShape]) -> None:
    """Stream every file into a temporary table, held to the manifest as it goes (see the module)."""
    keys = crypto.identities()
    for i, (shape, entry) in enumerate(zip(shapes, manifest.tables, strict=True)):
        stage = _stage_name(i)
        conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            stage, shape.column_list, shape.identifier))
        path = manifest.directory / entry.file

        def too_long(n: int, path: Path = path, entry: TableBackup = entry) -> str:
            return (f"backup {manifest.backup_id}: {path} is longer than the {entry.bytes:,} bytes its manifest "
                    f"records (refused at byte {n:,}); nothing was changed")

        cur = conn.cursor()
        with fs.open_trusted(path) as raw:
            reader = catalog.HashingReader(raw, limit=entry.bytes, describe=too_long)
            try:
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER MATCH)").format(
                        stage, shape.column_list)) as copy:
                    sink = _StagingSink(copy, manifest, entry, reader)
                    crypto.decrypt_stream(reader, sink, keys)
                    sink.finish()
            except BackupError:
                raise
            except (OSError, EOFError, zlib.error, psycopg.errors.DataError) as exc:
                raise BackupError(f"backup {manifest.backup_id}: {path} cannot be loaded: {exc}") from None
            reader.drain()
        catalog.check_digest(manifest, entry, reader)
        if cur.rowcount != entry.rows or sink.csv_bytes != entry.csv_bytes:
            raise BackupError(
                f"backup {manifest.backup_id}: {path} holds {cur.rowcount} rows ({sink.csv_bytes} CSV bytes), the "
                f"manifest says {entry.rows} ({entry.csv_bytes})")
        # statistics of the key only: enough for the planner to pick hash joins, far cheaper than all columns
        conn.execute(sql.SQL("ANALYZE {} ({})").format(stage, sql.SQL(", ").join(sql.Identifier(k) for k in shape.primary_key)))


def _same_row(shape: TableShape, left: str, right: str) -> sql.Composable:
    """Same primary key, and the same stored bytes in every column: record_image_eq, the comparison
    REFRESH MATERIALIZED VIEW CONCURRENTLY uses. Stricter than `=` (1.0 is not 1.00, NULL is not '',
    json compares although it has no equality operator) and no text conversion of each row."""
    keys = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in shape.primary_key)

    def row(alias: str) -> sql.Composable:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(alias, c.name) for c in shape.columns))

    return sql.SQL("{} AND record_image_eq({}, {})").format(keys, row(left), row(right))


def _key_text(shape: TableShape) -> sql.Composable:
    return sql.SQL("ROW({})::text AS k").format(sql.SQL(", ").join(sql.Identifier(k) for k in shape.primary_key))


def _restore_statement(shapes: Sequence[TableShape]) -> sql.Composable:
    """One statement: delete every row that is not exactly in the backup, then (gated on all the
    deletes having run) insert every backup row that is not exactly there. Foreign keys are checked
    once, at its end, against the final state; unique keys never see a replaced row twice."""
    ctes: list[sql.Composable] = []
    for i, s in enumerate(shapes):
        ctes.append(sql.SQL("d{i} AS (DELETE FROM {t} AS t WHERE NOT EXISTS (SELECT 1 FROM {s} AS s WHERE {same}) RETURNING {key})").format(
            i=sql.SQL(str(i)), t=s.identifier, s=_stage_name(i), same=_same_row(s, "s", "t"), key=_key_text(s)))
    all_deleted = sql.SQL(" + ").join(sql.SQL("(SELECT count(*) FROM d{})").format(sql.SQL(str(i))) for i in range(len(shapes)))
    ctes.append(sql.SQL("deletes_done AS (SELECT {} AS n)").format(all_deleted))
    for i, s in enumerate(shapes):
        ctes.append(sql.SQL(
            "i{i} AS (INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {scols} FROM {s} AS s "
            "WHERE (SELECT n FROM deletes_done) >= 0 AND NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {same}) RETURNING {key})"
        ).format(
            i=sql.SQL(str(i)), t=s.identifier, cols=s.column_list, s=_stage_name(i),
            scols=sql.SQL(", ").join(sql.Identifier("s", c.name) for c in s.columns),
            same=_same_row(s, "t", "s"), key=_key_text(s)))
    counts = []
    for i in range(len(shapes)):
        n = sql.SQL(str(i))
        counts.append(sql.SQL(
            "SELECT {n}, (SELECT count(*) FROM d{n}), (SELECT count(*) FROM i{n}), "
            "(SELECT count(*) FROM d{n} JOIN i{n} USING (k))"
        ).format(n=n))
    return sql.SQL("WITH {} {}").format(sql.SQL(", ").join(ctes), sql.SQL(" UNION ALL ").join(counts))


def _check_exact(conn: psycopg.Connection, manifest: BackupManifest, shapes: Sequence[TableShape]) -> None:
    for i, shape in enumerate(shapes):
        differing = conn.execute(sql.SQL(
            "SELECT (SELECT count(*) FROM {t}) - (SELECT count(*) FROM {s}), "
            "(SELECT count(*) FROM {t} AS t WHERE NOT EXISTS (SELECT 1 FROM {s} AS s WHERE {same}))"
        ).format(t=shape.identifier, s=_stage_name(i), same=_same_row(shape, "s", "t"))).fetchone()
        if differing != (0, 0):
            raise BackupError(
                f"restore of backup {manifest.backup_id} stopped: after it, {shape.table} still differs from the "
                f"backup ({differing[1]} rows differ, row count off by {differing[0]}); nothing was changed")


def _raise_sequences(conn: psycopg.Connection, shapes: Sequence[TableShape]) -> None:
    """Identity/serial sequences at least max(id), so new rows never collide with restored ones.

    Never lowered: setval is not transactional (a lowered sequence would outlive a rollback), and
    ids of rows the restore removed stay unused (the audit log and older backups still name them)."""
    for shape in shapes:
        for column in shape.columns:
            seq = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = pg_get_serial_sequence(%s, %s)::regclass",
                [shape.table, column.name],
            ).fetchone()
            if seq is None:
                continue
            conn.execute(sql.SQL(
                "SELECT setval({seq}::regclass, m) FROM (SELECT max({col}) AS m FROM {t}) x, {seq_table} s "
                "WHERE m >= CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END"
            ).format(seq=sql.Literal(sql.Identifier(*seq).as_string(conn)), col=sql.Identifier(column.name),
                     t=shape.identifier, seq_table=sql.Identifier(*seq)))


def _write_audit(conn: psycopg.Connection, manifest: BackupManifest, result: RestoreResult, run_id: str | None) -> None:
    rows = [
        (run_id, "restore_backup", "restore", t.table, manifest.backup_id,
         json.dumps({"rows": t.rows_before, "pre_restore_backup": result.pre_restore_backup_id}),
         json.dumps({"rows": t.rows_after, "backup_id": manifest.backup_id, "backup_label": manifest.label,
                     "inserted": t.inserted, "updated": t.updated, "deleted": t.deleted}))
        for t in result.tables
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)",
            rows,
        )




def restore_backup(
    conn: psycopg.Connection,
    backup_id: str,
    *,
    backup_root: Path | str | None = None,
    run_id: str | None = None,
    pre_restore_backup: bool = True,
    dry_run: bool = False,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str | None = None,
    log=None,
) -> RestoreResult:
    """Restore the tables of a backup exactly, in one transaction (see the module docstring).

    `conn` logs in as the restorer role and is outside any transaction. `dry_run` does everything
    (verification, staging, the restore statement, the exactness check) and rolls back: the counts
    say what a real restore would do; no pre-restore backup, no audit row, no sequence change.
    """
    say = log or (lambda message: None)
    started = time.monotonic()
    root = catalog.root_of(backup_root)
    directory = catalog.load_manifest(backup_id, root).directory
    with fs.locked(directory, shared=True):  # pruning never removes a backup a restore is reading
        manifest = catalog.load_manifest(backup_id, root)
        catalog.verify_backup(manifest)
        catalog.check_keys(manifest)
        say(f"backup {manifest.backup_id} verified: signature, {len(manifest.tables)} file(s) with their sha256, "
            f"key; {manifest.total_rows} rows")
        require_idle(conn, "restore_backup")
        result = RestoreResult(backup_id=manifest.backup_id, dry_run=dry_run, pre_restore_backup=None)
        pending = _restore(conn, manifest, result, root=root, run_id=run_id, pre_restore_backup=pre_restore_backup,
                           lock_timeout=lock_timeout, statement_timeout=statement_timeout, say=say)
    if pending is not None:
        try:
            pending.publish()
            say(f"pre-restore backup {pending.manifest.backup_id} published")
        except (OSError, BackupError) as exc:  # the restore committed: its pre-restore backup is settled later
            say(f"the restore committed but its pre-restore backup {pending.manifest.backup_id} could not be published "
                f"yet ({exc}); the prune_backups job publishes it")
    result.seconds = time.monotonic() - started
    say(("dry run, would restore: " if dry_run else "restored: ") + ", ".join(
        f"{t.table} +{t.inserted} ~{t.updated} -{t.deleted}" for t in result.tables))
    return result


class _Rollback(Exception):
    pass


def _restore(conn: psycopg.Connection, manifest: BackupManifest, result: RestoreResult, *, root: Path,
             run_id: str | None, pre_restore_backup: bool, lock_timeout: str, statement_timeout: str | None,
             say) -> PendingBackup | None:
    """The transaction; returns the pre-restore backup to publish now that it committed."""
    pending: PendingBackup | None = None
    dry_run = result.dry_run
    try:
        with locks.session_lock(conn, locks.RESTORE), locks.session_lock(conn, locks.IMPORTS):
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    set_copy_settings(conn)
                    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
                    conn.execute("SET LOCAL work_mem = '64MB'")  # the row comparisons hash whole tables
                    if statement_timeout is not None:
                        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(statement_timeout)))
                    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
                        sql.SQL(", ").join(sql.Identifier(*t.table.split(".")) for t in manifest.tables)))
                    shapes = _check_restorable(conn, manifest)
                    before = {s.table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(s.identifier)).fetchone()[0]
                              for s in shapes}
                    if pre_restore_backup and not dry_run:
                        pending = write_pending(
                            conn, shapes, label=f"pre-restore of {manifest.backup_id}", run_id=run_id, root=root,
                            what="nothing was written to the HR tables (the restore's transaction was rolled back)")
                        result.pre_restore_backup = pending.manifest
                        say(f"pre-restore backup {pending.manifest.backup_id} written (published when the restore commits)")
                    conn.execute("SET CONSTRAINTS ALL DEFERRED")
                    _load_staging(conn, manifest, shapes)
                    counts = {row[0]: row[1:] for row in conn.execute(_restore_statement(shapes)).fetchall()}
                    _check_exact(conn, manifest, shapes)
                    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # deferrable keys checked here, inside the block
                    for i, (shape, entry) in enumerate(zip(shapes, manifest.tables, strict=True)):
                        deleted, inserted, replaced = counts[i]
                        result.tables.append(TableRestore(
                            table=shape.table, rows_before=before[shape.table], rows_after=entry.rows,
                            inserted=inserted - replaced, updated=replaced, deleted=deleted - replaced))
                    if dry_run:
                        raise _Rollback
                    _write_audit(conn, manifest, result, run_id)
                    note = shortcuts.after_restore(conn, [t.table for t in result.tables if t.inserted + t.updated + t.deleted],
                                                   manifest.backup_id, run_id)
                    if note:
                        say(note)
                    _raise_sequences(conn, shapes)
            except _Rollback:
                pass
            except psycopg.errors.UndefinedTable as exc:
                raise BackupError(
                    f"backup {manifest.backup_id} cannot be restored: {exc.diag.message_primary}; nothing was changed") from None
            except psycopg.errors.LockNotAvailable as exc:
                raise BackupError(
                    f"restore of backup {manifest.backup_id} gave up waiting for its tables (lock_timeout "
                    f"{lock_timeout}): {exc.diag.message_primary}; nothing was changed") from None
            except psycopg.errors.InsufficientPrivilege as exc:
                raise BackupError(
                    f"restore of backup {manifest.backup_id} refused by the database: {exc.diag.message_primary}. "
                    "Restores run as the restorer role, which may only rewrite the tables the import stages back up. "
                    "Nothing was changed.") from None
            except psycopg.errors.IntegrityError as exc:
                raise BackupError(
                    f"restore of backup {manifest.backup_id} refused by the database: {exc.diag.message_primary}"
                    + (f" ({exc.diag.message_detail})" if exc.diag.message_detail else "")
                    + ". Rows that exist now but not in the backup are still referenced from a table outside it: "
                    "restore a backup that also holds that table, or a later one. Nothing was changed."
                ) from None
    except locks.LockNotAvailable as exc:
        raise BackupError(f"restore of backup {manifest.backup_id} not started: {exc}") from None
    except BaseException:
        if pending is not None:  # the restore did not happen: its pre-restore backup goes too
            pending.discard()
            result.pre_restore_backup = None
        raise
    return pending


__all__ = ["DEFAULT_LOCK_TIMEOUT", "RestoreResult", "TableRestore", "restore_backup"]
