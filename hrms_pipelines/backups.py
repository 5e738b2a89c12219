"""Backups of HR tables, and their verified, exact restore.

A backup is a folder `<backup root>/<backup id>/` holding one gzip-compressed CSV file per table,
exported with `COPY ... TO STDOUT` inside one REPEATABLE READ READ ONLY transaction (so every table
comes from the same snapshot), and a `manifest.json` written last, atomically: a folder without a
manifest is a partial backup and is never listed or restored. The folder is 0700, the files 0600.

The CSV files are PostgreSQL's own text output under pinned session settings (UTF-8, ISO dates,
UTC, shortest-exact floats, hex bytea), read back by `COPY ... FROM STDIN (HEADER MATCH)`: every type
round-trips exactly, NULL (unquoted empty) stays distinct from '' (quoted empty).

A restore (`restore_backup`) verifies the manifest and every file's sha256 first, then in ONE
transaction, run as the connecting (owner) role:

1. takes the advisory locks `restore` and `imports` (no import runs meanwhile), and the tables in
   EXCLUSIVE mode (readers go on, writers wait; `lock_timeout` bounds our wait);
2. exports the current rows of the same tables: the pre-restore backup, from the very snapshot
   the restore replaces;
3. COPYs each file into a temporary staging table (checking sha256 and row count again while
   streaming, so what is loaded is what was verified);
4. in ONE statement: deletes the rows that differ from the backup (or are not in it; compared
   byte for byte with record_image_eq), then inserts
   the backup rows that are missing. PostgreSQL checks non-deferrable foreign keys at the end of a
   statement, so the order of tables does not matter, cycles (team leader <-> employee's team) are
   fine, and rows of other tables that reference a replaced row stay valid (same key at the end).
   A row that exists now but not in the backup and is still referenced from a table outside the
   backup stops the restore with the database's error: nothing is changed;
5. checks that every table now equals its staging copy, row for row (so a trigger or a cascade
   could never leave something else behind), raises identity sequences to max(id), and writes one
   audit-log row (action 'restore') per table.

Storage: every file operation is one of the small `_fs_*` functions below, on `pathlib.Path`.
A deployment that keeps backups on object storage replaces those with `upath.UPath` equivalents
(the O_NOFOLLOW/O_EXCL/fsync guarantees then become the store's: write-once keys, checksums).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import dagster as dg
import psycopg
from psycopg import sql

from hrms_pipelines import locks, settings
from hrms_pipelines.metadata import markdown_table

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
FILE_FORMAT = "csv+gzip"
# zlib level 3 compresses these CSVs almost as well as 6 (the default) at about twice the speed.
COMPRESS_LEVEL = 3
CHUNK = 1 << 20
DEFAULT_LOCK_TIMEOUT = "10s"

# Session settings that make COPY's text output exact and independent of the server's defaults.
_COPY_SETTINGS = {
    "client_encoding": "UTF8",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}

_BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[a-z0-9]{1,16}(?:-[0-9]{1,4})?")
_FILE_NAME = re.compile(r"[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*\.csv\.gz")
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BackupError(Exception):
    """A backup cannot be taken, found, trusted or restored; the message says which file and why."""


# --------------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class TableBackup:
    table: str
    rows: int
    file: str
    bytes: int
    sha256: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "rows": self.rows, "file": self.file, "bytes": self.bytes,
            "sha256": self.sha256, "columns": [{"name": c.name, "type": c.type} for c in self.columns],
            "primary_key": list(self.primary_key),
        }


@dataclass(frozen=True)
class BackupManifest:
    backup_id: str
    directory: Path
    created_at: datetime
    run_id: str | None
    label: str
    database: str
    tables: tuple[TableBackup, ...]
    server_version: str = ""

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "format": FILE_FORMAT, "backup_id": self.backup_id,
            "created_at": self.created_at.isoformat(), "run_id": self.run_id, "label": self.label,
            "database": self.database, "server_version": self.server_version,
            "tables": [t.to_json() for t in self.tables],
        }

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata: backup id, folder, rows per table, totals."""
        rows = [[t.table, t.rows, t.bytes, t.sha256[:12]] for t in self.tables]
        metadata: dict[str, Any] = {
            "backup_id": dg.MetadataValue.text(self.backup_id),
            "backup_path": dg.MetadataValue.path(str(self.directory)),
            "backup_tables": dg.MetadataValue.md(markdown_table(["table", "rows", "bytes", "sha256"], rows)),
            "backup_total_rows": dg.MetadataValue.int(self.total_rows),
            "backup_total_bytes": dg.MetadataValue.int(self.total_bytes),
        }
        for t in self.tables:
            metadata[f"backup_rows {t.table}"] = dg.MetadataValue.int(t.rows)
        return metadata


def _manifest_from_json(data: Any, directory: Path) -> BackupManifest:
    """Parse and check a manifest; every problem is a BackupError naming the manifest."""
    where = directory / MANIFEST

    def fail(problem: str) -> BackupError:
        return BackupError(f"backup manifest {where} is malformed: {problem}")

    if not isinstance(data, dict):
        raise fail("not a JSON object")
    if data.get("format_version") != FORMAT_VERSION or data.get("format") != FILE_FORMAT:
        raise fail(f"unknown format {data.get('format')!r} version {data.get('format_version')!r}")
    backup_id = data.get("backup_id")
    if not isinstance(backup_id, str) or backup_id != directory.name:
        raise fail(f"backup_id {backup_id!r} does not match its folder {directory.name!r}")
    try:
        created_at = datetime.fromisoformat(data["created_at"])
    except (KeyError, TypeError, ValueError):
        raise fail(f"created_at {data.get('created_at')!r} is not an ISO timestamp") from None
    run_id, label = data.get("run_id"), data.get("label")
    if run_id is not None and not isinstance(run_id, str) or not isinstance(label, str):
        raise fail("run_id and label must be strings")
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, list) or not raw_tables:
        raise fail("no tables")
    tables: list[TableBackup] = []
    for i, raw in enumerate(raw_tables):
        if not isinstance(raw, dict):
            raise fail(f"tables[{i}] is not an object")
        name, file = raw.get("table"), raw.get("file")
        if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
            raise fail(f"tables[{i}]: table name {name!r} is not schema.table")
        if name.split(".")[0] != settings.HR_SCHEMA:
            raise fail(f"tables[{i}]: {name} is outside the {settings.HR_SCHEMA!r} schema")
        if not isinstance(file, str) or not _FILE_NAME.fullmatch(file):
            # no separators, no "..", no hidden files: a file name, never a path
            raise fail(f"tables[{i}]: file name {file!r} is not a plain backup file name")
        rows, size, sha = raw.get("rows"), raw.get("bytes"), raw.get("sha256")
        if not (isinstance(rows, int) and rows >= 0 and isinstance(size, int) and size >= 0):
            raise fail(f"tables[{i}] ({name}): rows and bytes must be non-negative integers")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise fail(f"tables[{i}] ({name}): sha256 {sha!r} is not 64 hex digits")
        try:
            columns = tuple(Column(str(c["name"]), str(c["type"])) for c in raw["columns"])
            primary_key = tuple(str(c) for c in raw["primary_key"])
        except (KeyError, TypeError):
            raise fail(f"tables[{i}] ({name}): columns/primary_key missing or malformed") from None
        names = [c.name for c in columns]
        if not columns or len(set(names)) != len(names) or not primary_key or not set(primary_key) <= set(names):
            raise fail(f"tables[{i}] ({name}): columns or primary key inconsistent")
        tables.append(TableBackup(name, rows, file, size, sha, columns, primary_key))
    if len({t.table for t in tables}) != len(tables) or len({t.file for t in tables}) != len(tables):
        raise fail("a table or file is listed twice")
    return BackupManifest(
        backup_id=backup_id, directory=directory, created_at=created_at, run_id=run_id, label=label,
        database=str(data.get("database", "")), tables=tuple(tables),
        server_version=str(data.get("server_version", "")),
    )


# --------------------------------------------------------------------------------------------------
# File system: the only functions that touch the backup folder (swap these for UPath on object storage)


def _fs_make_root(root: Path) -> None:
    """The backup root, created 0700 when missing (an existing root keeps its mode: it may be shared)."""
    if not root.exists():
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)


def _fs_make_private_dir(path: Path) -> bool:
    """Create `path` (0700); False when it exists already (a file, folder or symlink by that name)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    os.chmod(path, 0o700)  # whatever the umask
    return True


def _fs_is_dir(path: Path) -> bool:
    """A real folder, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _fs_exists(path: Path) -> bool:
    return os.path.lexists(path)


def _fs_list_dirs(root: Path) -> list[Path]:
    if not _fs_is_dir(root):
        return []
    return sorted(p for p in root.iterdir() if _fs_is_dir(p))


@contextmanager
def _fs_create(path: Path) -> Iterator[BinaryIO]:
    """A new file, 0600, never following a symlink and never replacing anything; fsynced on close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def _fs_open(path: Path) -> Iterator[BinaryIO]:
    """An existing regular file for reading; a symlink (to anything) is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise BackupError(f"{path} is missing") from None
    except OSError as exc:  # ELOOP: the name is a symlink
        raise BackupError(f"{path} cannot be opened safely ({exc.strerror}); a backup never holds symlinks") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        yield handle


def _fs_write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, rename over `path`, fsync the folder: all or nothing."""
    temporary = path.with_name(f".{path.name}.tmp")
    with _fs_create(temporary) as handle:
        handle.write(data)
    os.replace(temporary, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _fs_remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reading backups


def _root(backup_root: Path | str | None) -> Path:
    return Path(backup_root) if backup_root is not None else settings.backup_dir()


def _read_manifest(directory: Path) -> BackupManifest:
    with _fs_open(directory / MANIFEST) as handle:
        raw = handle.read()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BackupError(f"backup manifest {directory / MANIFEST} is not valid JSON: {exc}") from None
    return _manifest_from_json(data, directory)


def list_backups(backup_root: Path | str | None = None) -> list[BackupManifest]:
    """Every complete backup under the root, newest first. Partial (manifest-less) folders are left out."""
    manifests = []
    for directory in _fs_list_dirs(_root(backup_root)):
        if not _BACKUP_ID.fullmatch(directory.name) or not _fs_exists(directory / MANIFEST):
            continue
        try:
            manifests.append(_read_manifest(directory))
        except BackupError:
            continue
    return sorted(manifests, key=lambda m: (m.created_at, m.backup_id), reverse=True)


def _known_ids(root: Path, limit: int = 20) -> str:
    ids = [m.backup_id for m in list_backups(root)]
    if not ids:
        return f"there are no backups in {root}"
    shown = ", ".join(ids[:limit]) + (f" … and {len(ids) - limit} more" if len(ids) > limit else "")
    return f"backups in {root} (newest first): {shown}"


def load_manifest(backup_id: str, backup_root: Path | str | None = None) -> BackupManifest:
    """The manifest of one backup; an unknown, malformed or partial backup is a BackupError."""
    root = _root(backup_root)
    backup_id = (backup_id or "").strip()
    if not _BACKUP_ID.fullmatch(backup_id):
        raise BackupError(f"{backup_id!r} is not a backup id (like 20260101T020000Z-1a2b3c4d); {_known_ids(root)}")
    directory = root / backup_id
    if not _fs_is_dir(directory):
        raise BackupError(f"unknown backup id {backup_id!r}; {_known_ids(root)}")
    if not _fs_exists(directory / MANIFEST):
        raise BackupError(
            f"backup {backup_id} is partial: {directory} has no {MANIFEST} (the backup never finished); "
            f"it cannot be restored. {_known_ids(root)}"
        )
    return _read_manifest(directory)


class _HashingReader:
    """A read-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha256, self.bytes = raw, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _check_digest(manifest: BackupManifest, entry: TableBackup, reader: _HashingReader) -> None:
    path = manifest.directory / entry.file
    if reader.bytes != entry.bytes:
        raise BackupError(
            f"backup {manifest.backup_id}: {path} has {reader.bytes} bytes, the manifest says {entry.bytes}: "
            "the file was changed or truncated after the backup was taken; refusing to restore"
        )
    digest = reader.sha256.hexdigest()
    if digest != entry.sha256:
        raise BackupError(
            f"backup {manifest.backup_id}: {path} fails its checksum (sha256 {digest[:16]}…, manifest "
            f"{entry.sha256[:16]}…): the file was changed after the backup was taken; refusing to restore"
        )


def verify_backup(manifest: BackupManifest) -> None:
    """Every file present, a regular file, of the recorded size and sha256; else BackupError naming it."""
    for entry in manifest.tables:
        path = manifest.directory / entry.file
        with _fs_open(path) as handle:
            reader = _HashingReader(handle)
            reader.drain()
        _check_digest(manifest, entry, reader)


# --------------------------------------------------------------------------------------------------
# Taking backups


@dataclass(frozen=True)
class _TableShape:
    table: str  # schema.name
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    partitioned: bool

    @property
    def identifier(self) -> sql.Composable:
        schema, name = self.table.split(".")
        return sql.Identifier(schema, name)

    @property
    def column_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c.name) for c in self.columns)


def _qualified(name: str) -> str:
    name = name.strip()
    return name if "." in name else f"{settings.HR_SCHEMA}.{name}"


def _table_shapes(conn: psycopg.Connection, tables: Sequence[str]) -> list[_TableShape]:
    """Columns (stored, not generated), primary key and kind of each table; unknown ones refused."""
    shapes = []
    for name in dict.fromkeys(_qualified(t) for t in tables):
        if not _TABLE_NAME.fullmatch(name) or name.split(".")[0] != settings.HR_SCHEMA:
            raise BackupError(f"cannot back up {name!r}: only tables of the {settings.HR_SCHEMA!r} schema are backed up")
        schema, relname = name.split(".")
        row = conn.execute(
            "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [schema, relname],
        ).fetchone()
        if row is None:
            raise BackupError(f"table {name} does not exist")
        oid, relkind = row
        columns = tuple(
            Column(n, t) for n, t in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                [oid],
            )
        )
        primary_key = tuple(
            r[0] for r in conn.execute(
                "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, pos) "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.pos",
                [oid],
            )
        )
        if not primary_key:
            raise BackupError(f"table {name} has no primary key: a backup of it could not be restored exactly")
        shapes.append(_TableShape(name, columns, primary_key, relkind == "p"))
    if not shapes:
        raise BackupError("no tables to back up")
    return shapes


def _set_copy_settings(conn: psycopg.Connection) -> None:
    for name, value in _COPY_SETTINGS.items():
        conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value)))


class _HashingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha256, self.bytes = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _export_table(conn: psycopg.Connection, shape: _TableShape, path: Path) -> TableBackup:
    """COPY one table into a new gzip file, streamed through a 1 MiB buffer."""
    if shape.partitioned:  # COPY of a partitioned table needs the query form
        query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv, HEADER)").format(shape.column_list, shape.identifier)
    else:
        query = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT csv, HEADER)").format(shape.identifier, shape.column_list)
    with _fs_create(path) as raw:
        writer = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=writer, compresslevel=COMPRESS_LEVEL, mtime=0) as gz:  # type: ignore[arg-type]
            cur = conn.cursor()
            buffer = bytearray()
            with cur.copy(query) as copy:
                for chunk in copy:
                    buffer += chunk
                    if len(buffer) >= CHUNK:
                        gz.write(buffer)
                        buffer.clear()
            gz.write(buffer)
            rows = cur.rowcount
    return TableBackup(
        table=shape.table, rows=rows, file=path.name, bytes=writer.bytes, sha256=writer.sha256.hexdigest(),
        columns=shape.columns, primary_key=shape.primary_key,
    )


def _describe_database(conn: psycopg.Connection) -> str:
    """Where the backup came from, without credentials."""
    info = conn.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


def _new_backup_dir(root: Path, run_id: str | None) -> tuple[str, Path]:
    """A fresh folder named by the UTC time and the short run id; a suffix if the name is taken."""
    short = re.sub(r"[^a-z0-9]", "", (run_id or "").lower())[:8] or "manual"
    base = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{short}"
    _fs_make_root(root)
    for attempt in range(1, 1000):
        backup_id = base if attempt == 1 else f"{base}-{attempt}"
        if _fs_make_private_dir(root / backup_id):
            return backup_id, root / backup_id
    raise BackupError(f"cannot create a backup folder under {root}: {base} and its suffixes are taken")


def _write_backup(
    conn: psycopg.Connection, shapes: Sequence[_TableShape], *, label: str, run_id: str | None, root: Path
) -> BackupManifest:
    """Export `shapes` inside the caller's transaction (which fixes the snapshot) and write the manifest."""
    backup_id, directory = _new_backup_dir(root, run_id)
    try:
        entries = tuple(_export_table(conn, s, directory / f"{s.table}.csv.gz") for s in shapes)
        manifest = BackupManifest(
            backup_id=backup_id, directory=directory, created_at=datetime.now(UTC), run_id=run_id, label=label,
            database=_describe_database(conn), tables=entries,
            server_version=str(conn.info.server_version),
        )
        _fs_write_atomically(directory / MANIFEST, json.dumps(manifest.to_json(), indent=2).encode())
    except BaseException:
        _fs_remove_tree(directory)
        raise
    return manifest


def _require_idle(conn: psycopg.Connection, what: str) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise BackupError(
            f"{what} needs a connection outside any transaction (it opens its own); commit or roll back first"
        )


def take_backup(
    conn: psycopg.Connection,
    tables: Sequence[str],
    *,
    label: str,
    run_id: str | None,
    backup_root: Path | None = None,
) -> BackupManifest:
    """Export `tables` ("hrms.x" or "x") from one consistent snapshot into a new backup folder.

    `conn` must not be inside a transaction: the export runs in its own REPEATABLE READ READ ONLY one.
    """
    _require_idle(conn, "take_backup")
    root = _root(backup_root)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        _set_copy_settings(conn)
        shapes = _table_shapes(conn, tables)
        return _write_backup(conn, shapes, label=label, run_id=run_id, root=root)


# --------------------------------------------------------------------------------------------------
# Restoring


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


def _check_restorable(conn: psycopg.Connection, manifest: BackupManifest) -> list[_TableShape]:
    """The tables as they are now must have the backup's columns, and nothing that would turn our
    deletes and inserts into changes elsewhere (cascading foreign keys, user triggers). The project's
    own `hrms_guard_*` triggers only refuse changes (a finished import record is final), never make
    any: they stay out of the way of a restore's deletes and inserts."""
    try:
        shapes = _table_shapes(conn, [t.table for t in manifest.tables])
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
        """
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


def _load_staging(conn: psycopg.Connection, manifest: BackupManifest, shapes: Sequence[_TableShape]) -> None:
    """COPY every backup file into a temporary table, re-checking its sha256 and row count as it streams."""
    for i, (shape, entry) in enumerate(zip(shapes, manifest.tables, strict=True)):
        stage = _stage_name(i)
        conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            stage, shape.column_list, shape.identifier))
        path = manifest.directory / entry.file
        cur = conn.cursor()
        with _fs_open(path) as raw:
            reader = _HashingReader(raw)
            try:
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER MATCH)").format(stage, shape.column_list)) as copy:
                    with gzip.GzipFile(filename="", mode="rb", fileobj=reader) as gz:  # type: ignore[arg-type]
                        while data := gz.read(CHUNK):
                            copy.write(data)
            except (OSError, EOFError, psycopg.errors.DataError) as exc:
                reader.drain()
                _check_digest(manifest, entry, reader)
                raise BackupError(f"backup {manifest.backup_id}: {path} cannot be loaded: {exc}") from None
            reader.drain()
        _check_digest(manifest, entry, reader)
        if cur.rowcount != entry.rows:
            raise BackupError(
                f"backup {manifest.backup_id}: {path} holds {cur.rowcount} rows, the manifest says {entry.rows}")
        # statistics of the key only: enough for the planner to pick hash joins, far cheaper than all columns
        conn.execute(sql.SQL("ANALYZE {} ({})").format(stage, sql.SQL(", ").join(sql.Identifier(k) for k in shape.primary_key)))


def _same_row(shape: _TableShape, left: str, right: str) -> sql.Composable:
    """Same primary key, and the same stored bytes in every column: record_image_eq, the comparison
    REFRESH MATERIALIZED VIEW CONCURRENTLY uses. Stricter than `=` (1.0 is not 1.00, NULL is not '',
    json compares although it has no equality operator) and no text conversion of each row."""
    keys = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in shape.primary_key)

    def row(alias: str) -> sql.Composable:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(alias, c.name) for c in shape.columns))

    return sql.SQL("{} AND record_image_eq({}, {})").format(keys, row(left), row(right))


def _key_text(shape: _TableShape) -> sql.Composable:
    return sql.SQL("ROW({})::text AS k").format(sql.SQL(", ").join(sql.Identifier(k) for k in shape.primary_key))


def _restore_statement(shapes: Sequence[_TableShape]) -> sql.Composable:
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


def _check_exact(conn: psycopg.Connection, manifest: BackupManifest, shapes: Sequence[_TableShape]) -> None:
    for i, shape in enumerate(shapes):
        differing = conn.execute(sql.SQL(
            "SELECT (SELECT count(*) FROM {t}) - (SELECT count(*) FROM {s}), "
            "(SELECT count(*) FROM {t} AS t WHERE NOT EXISTS (SELECT 1 FROM {s} AS s WHERE {same}))"
        ).format(t=shape.identifier, s=_stage_name(i), same=_same_row(shape, "s", "t"))).fetchone()
        if differing != (0, 0):
            raise BackupError(
                f"restore of backup {manifest.backup_id} stopped: after it, {shape.table} still differs from the "
                f"backup ({differing[1]} rows differ, row count off by {differing[0]}); nothing was changed")


def _raise_sequences(conn: psycopg.Connection, shapes: Sequence[_TableShape]) -> None:
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

    `conn` connects as the tables' owner and is outside any transaction. `dry_run` does everything
    (verification, staging, the restore statement, the exactness check) and rolls back: the counts
    say what a real restore would do; no pre-restore backup, no audit row, no sequence change.
    """
    say = log or (lambda message: None)
    started = time.monotonic()
    root = _root(backup_root)
    manifest = load_manifest(backup_id, root)
    verify_backup(manifest)
    say(f"backup {manifest.backup_id} verified: {len(manifest.tables)} table(s), {manifest.total_rows} rows, sha256 ok")
    _require_idle(conn, "restore_backup")
    result = RestoreResult(backup_id=manifest.backup_id, dry_run=dry_run, pre_restore_backup=None)

    class _Rollback(Exception):
        pass

    try:
        with locks.session_lock(conn, locks.RESTORE), locks.session_lock(conn, locks.IMPORTS):
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    _set_copy_settings(conn)
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
                        result.pre_restore_backup = _write_backup(
                            conn, shapes, label=f"pre-restore of {manifest.backup_id}", run_id=run_id, root=root)
                        say(f"pre-restore backup {result.pre_restore_backup.backup_id} taken")
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
        if result.pre_restore_backup is not None:  # the restore did not happen: its pre-restore backup goes too
            _fs_remove_tree(result.pre_restore_backup.directory)
            result.pre_restore_backup = None
        raise
    result.seconds = time.monotonic() - started
    say(("dry run, would restore: " if dry_run else "restored: ") + ", ".join(
        f"{t.table} +{t.inserted} ~{t.updated} -{t.deleted}" for t in result.tables))
    return result


__all__ = [
    "BackupError", "BackupManifest", "Column", "RestoreResult", "TableBackup", "TableRestore",
    "list_backups", "load_manifest", "restore_backup", "take_backup", "verify_backup",
]
