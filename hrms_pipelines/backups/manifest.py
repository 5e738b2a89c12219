"""What a backup is on disk: its manifest (format, tables, files, checksums) and the errors.

manifest.json (format version 2) lists, per table, the encrypted file (`file`, `bytes`, `sha256` of
the bytes on disk), the rows and the size of the CSV inside (`rows`, `csv_bytes`: what a restore
holds the stream to), and the table's columns and primary key. `manifest.sig` beside it carries the
HMAC-SHA256 of manifest.json's exact bytes (hrms_pipelines.backups.crypto): the signature covers the
checksums of the encrypted files, so nothing in the folder can change without the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from hrms_pipelines import settings
from hrms_pipelines.metadata import markdown_table

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT_VERSION = 2
FILE_FORMAT = "csv+gzip+age"
FILE_SUFFIX = ".csv.gz.age"

BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[a-z0-9]{1,16}(?:-[0-9]{1,4})?")
FILE_NAME = re.compile(r"[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*\.csv\.gz\.age")
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*")
SHA256 = re.compile(r"[0-9a-f]{64}")


class BackupError(Exception):
    """A backup cannot be taken, found, trusted or restored; the message says which file and why."""


class BackupDiskFull(BackupError):
    """The disk under the backup folder filled up (or a size limit was reached) while writing."""


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
    csv_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "rows": self.rows, "file": self.file, "bytes": self.bytes,
            "sha256": self.sha256, "csv_bytes": self.csv_bytes,
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
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
    recipients: tuple[str, ...] = ()

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
            "encryption": {"scheme": "age-x25519", "recipients": list(self.recipients)},
            "tables": [t.to_json() for t in self.tables],
        }

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata: backup id, folder, rows per table, totals (no key material, no row data)."""
        rows = [[t.table, t.rows, t.bytes, t.sha256[:12]] for t in self.tables]
        metadata: dict[str, Any] = {
            "backup_id": dg.MetadataValue.text(self.backup_id),
            "backup_path": dg.MetadataValue.path(str(self.directory)),
            "backup_tables": dg.MetadataValue.md(markdown_table(["table", "rows", "bytes", "sha256"], rows)),
            "backup_total_rows": dg.MetadataValue.int(self.total_rows),
            "backup_total_bytes": dg.MetadataValue.int(self.total_bytes),
            "backup_encrypted_to": dg.MetadataValue.text(", ".join(self.recipients) or "-"),
        }
        for t in self.tables:
            metadata[f"backup_rows {t.table}"] = dg.MetadataValue.int(t.rows)
        return metadata


def manifest_from_json(data: Any, directory: Path) -> BackupManifest:
    """Parse and check a (signature-verified) manifest; every problem is a BackupError naming it.
    Whether its tables may be restored is the reader's check (catalog.read_manifest, with tables)."""
    where = directory / MANIFEST

    def fail(problem: str) -> BackupError:
        return BackupError(f"backup manifest {where} is malformed: {problem}")

    if not isinstance(data, dict):
        raise fail("not a JSON object")
    if data.get("format_version") != FORMAT_VERSION or data.get("format") != FILE_FORMAT:
        raise fail(f"unknown format {data.get('format')!r} version {data.get('format_version')!r} "
                   f"(this version reads {FILE_FORMAT!r} version {FORMAT_VERSION})")
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
    encryption = data.get("encryption")
    if not isinstance(encryption, dict) or encryption.get("scheme") != "age-x25519":
        raise fail("encryption scheme missing or not age-x25519")
    recipients = encryption.get("recipients")
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise fail("encryption recipients must be a list of strings")
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, list) or not raw_tables:
        raise fail("no tables")
    tables: list[TableBackup] = []
    for i, raw in enumerate(raw_tables):
        if not isinstance(raw, dict):
            raise fail(f"tables[{i}] is not an object")
        name, file = raw.get("table"), raw.get("file")
        if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
            raise fail(f"tables[{i}]: table name {settings.excerpt(name)} is not schema.table")
        if name.split(".")[0] != settings.HR_SCHEMA:
            raise fail(f"tables[{i}]: {name} is outside the {settings.HR_SCHEMA!r} schema")
        if not isinstance(file, str) or not FILE_NAME.fullmatch(file):
            # no separators, no "..", no hidden files: a file name, never a path
            raise fail(f"tables[{i}]: file name {settings.excerpt(file)} is not a plain backup file name")
        rows, size, csv_bytes, sha = raw.get("rows"), raw.get("bytes"), raw.get("csv_bytes"), raw.get("sha256")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (rows, size, csv_bytes)):
            raise fail(f"tables[{i}] ({name}): rows, bytes and csv_bytes must be non-negative integers")
        if not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise fail(f"tables[{i}] ({name}): sha256 {settings.excerpt(sha)} is not 64 hex digits")
        try:
            columns = tuple(Column(str(c["name"]), str(c["type"])) for c in raw["columns"])
            primary_key = tuple(str(c) for c in raw["primary_key"])
        except (KeyError, TypeError):
            raise fail(f"tables[{i}] ({name}): columns/primary_key missing or malformed") from None
        names = [c.name for c in columns]
        if not columns or len(set(names)) != len(names) or not primary_key or not set(primary_key) <= set(names):
            raise fail(f"tables[{i}] ({name}): columns or primary key inconsistent")
        tables.append(TableBackup(name, rows, file, size, sha, columns, primary_key, csv_bytes))
    if len({t.table for t in tables}) != len(tables) or len({t.file for t in tables}) != len(tables):
        raise fail("a table or file is listed twice")
    return BackupManifest(
        backup_id=backup_id, directory=directory, created_at=created_at, run_id=run_id, label=label,
        database=str(data.get("database", "")), tables=tuple(tables),
        server_version=str(data.get("server_version", "")), recipients=tuple(recipients),
    )


def retention_group(label: str) -> str:
    """Backups kept together by retention: an import stage's ('import_users'), 'snapshot',
    'pre-restore' (every 'pre-restore of <id>'), or the label itself."""
    return "pre-restore" if label.startswith("pre-restore of ") else label
