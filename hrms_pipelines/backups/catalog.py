"""Finding and trusting backups: list, load (signature first), verify files, check the key, and
settle what a killed writer left behind."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import psycopg

from hrms_pipelines import settings
from hrms_pipelines.backups import crypto, fs
from hrms_pipelines.backups.manifest import (
    BACKUP_ID, MANIFEST, SIGNATURE, BackupError, BackupManifest, TableBackup, manifest_from_json,
)
from hrms_pipelines.backups.tables import refuse_unrestorable

MAX_MANIFEST_BYTES = 16 << 20
# An empty pending folder younger than this may be a writer between mkdir and flock: left alone.
PENDING_GRACE_SECONDS = 60


def root_of(backup_root: Path | str | None) -> Path:
    return Path(backup_root) if backup_root is not None else settings.backup_dir()


def _read_small(path: Path, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    with fs.open_trusted(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BackupError(f"{path} is larger than {limit} bytes: not a manifest this service wrote")
    return data


def read_manifest(directory: Path) -> BackupManifest:
    """The manifest of a backup folder, its signature checked before a byte of it is parsed."""
    backup_id = directory.name.removeprefix(fs.PENDING_PREFIX)
    manifest = _read_small(directory / MANIFEST)
    if not fs.exists(directory / SIGNATURE):
        raise BackupError(
            f"backup {backup_id} is unsigned: {directory} has no {SIGNATURE}. Only backups this service signed are "
            "restored (backups from before signing, or folders copied in by hand, are refused)."
        )
    crypto.verify(manifest, _read_small(directory / SIGNATURE), backup_id, directory / SIGNATURE)
    try:
        data = json.loads(manifest)
    except ValueError as exc:
        raise BackupError(f"backup manifest {directory / MANIFEST} is not valid JSON: {exc}") from None
    parsed = manifest_from_json(data, directory.with_name(backup_id))
    for table in parsed.tables:
        refuse_unrestorable(table.table, f"backup {backup_id} ({parsed.directory / MANIFEST})")
    return parsed


def _check_root(root: Path) -> bool:
    """False when there is no root yet; BackupError when it cannot be trusted."""
    if not fs.exists(root):
        return False
    fs.check_trusted_dir(root, "the backup root")
    return True


@dataclass(frozen=True)
class Entry:
    """A folder under the backup root: its manifest, or why it is not a backup to use."""

    directory: Path
    manifest: BackupManifest | None
    problem: str | None


def scan(root: Path) -> list[Entry]:
    """Every folder named like a backup, trusted or not (pending and hidden folders are not backups)."""
    entries = []
    for directory in fs.list_dirs(root):
        if not BACKUP_ID.fullmatch(directory.name):
            continue
        try:
            fs.check_trusted_dir(directory, "backup folder")
            entries.append(Entry(directory, read_manifest(directory), None))
        except BackupError as exc:
            entries.append(Entry(directory, None, str(exc)))
    return entries


def list_backups(backup_root: Path | str | None = None) -> list[BackupManifest]:
    """Every complete, signed backup under the root, newest first. Pending (unpublished), unsigned or
    untrusted folders are left out."""
    root = root_of(backup_root)
    if not _check_root(root):
        return []
    manifests = [e.manifest for e in scan(root) if e.manifest is not None]
    return sorted(manifests, key=lambda m: (m.created_at, m.backup_id), reverse=True)


def known_ids(root: Path, limit: int = 20) -> str:
    try:
        ids = [m.backup_id for m in list_backups(root)]
    except BackupError as exc:
        return str(exc)
    if not ids:
        return f"there are no backups in {root}"
    shown = ", ".join(ids[:limit]) + (f" … and {len(ids) - limit} more" if len(ids) > limit else "")
    return f"backups in {root} (newest first): {shown}"


def load_manifest(backup_id: str, backup_root: Path | str | None = None) -> BackupManifest:
    """The manifest of one backup: the root and folder trusted, the signature verified, only
    restorable tables; anything else is a BackupError saying why."""
    root = root_of(backup_root)
    backup_id = (backup_id or "").strip()
    if not BACKUP_ID.fullmatch(backup_id):
        raise BackupError(f"{settings.shown(backup_id)} is not a backup id (like 20260101T020000Z-1a2b3c4d); "
                          f"{known_ids(root)}")
    if not _check_root(root):
        raise BackupError(f"unknown backup id {backup_id!r}; there are no backups in {root}")
    directory = root / backup_id
    if not fs.is_dir(directory):
        raise BackupError(f"unknown backup id {backup_id!r}; {known_ids(root)}")
    fs.check_trusted_dir(directory, f"backup {backup_id}: the folder")
    if not fs.exists(directory / MANIFEST):
        raise BackupError(
            f"backup {backup_id} is partial: {directory} has no {MANIFEST} (the backup never finished); "
            f"it cannot be restored. {known_ids(root)}"
        )
    return read_manifest(directory)


class HashingReader:
    """A read-only file wrapper that hashes and counts what passes through it, and refuses to read
    past `limit` bytes (the size the manifest records)."""

    def __init__(self, raw: BinaryIO, *, limit: int | None = None, describe: Callable[[int], str] | None = None) -> None:
        self.raw, self.sha256, self.bytes, self.limit, self.describe = raw, hashlib.sha256(), 0, limit, describe
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if self.limit is not None and self.bytes + len(data) > self.limit:
            self.error = self.error or BackupError(self.describe(self.bytes + len(data)) if self.describe else "too long")
            raise self.error
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(crypto.CHUNK):
            pass


def check_digest(manifest: BackupManifest, entry: TableBackup, reader: HashingReader) -> None:
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
    """Every file present, a regular file the service owns, of the recorded size and sha256; else
    BackupError naming it."""
    for entry in manifest.tables:
        path = manifest.directory / entry.file
        with fs.open_trusted(path) as handle:
            reader = HashingReader(handle)
            reader.drain()
        check_digest(manifest, entry, reader)


def check_keys(manifest: BackupManifest) -> None:
    """The configured identity opens every file of the backup (its header and first chunk): a wrong
    or missing key fails here, before anything is staged."""
    try:
        keys = crypto.identities()
    except BackupError as exc:
        raise BackupError(f"backup {manifest.backup_id} cannot be restored: {exc}. Nothing was changed.") from None
    for entry in manifest.tables:
        path = manifest.directory / entry.file
        with fs.open_trusted(path) as handle:
            crypto.check_can_decrypt(handle, keys, path, manifest.backup_id)


# --------------------------------------------------------------------------------------------------
# What killed writers left behind


@dataclass(frozen=True)
class Settled:
    name: str
    action: str  # "published", "removed", "in use", "kept"
    why: str


def _restore_committed(conn: psycopg.Connection, pending: BackupManifest) -> bool:
    """Did the restore that wrote this pre-restore backup commit? Its audit rows name it."""
    source = pending.label.removeprefix("pre-restore of ")
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM hrms.core_auditlog WHERE table_name = ANY (%s) AND row_key = %s "
        "AND action = 'restore' AND before->>'pre_restore_backup' = %s AND created_at >= %s)",
        [[t.table for t in pending.tables], source, pending.backup_id, pending.created_at - timedelta(days=1)],
    ).fetchone()[0])


def settle_pending(conn: psycopg.Connection | None, backup_root: Path | str | None = None,
                   log: Callable[[str], None] | None = None) -> list[Settled]:
    """Publish or remove the folders writers left unpublished (killed, out of disk, rolled back).

    A pre-restore backup is published when its restore committed (the audit log names it: the
    commit is the decision) and removed when the restore rolled back; any other unpublished folder
    was never complete or never used, and is removed. A folder whose writer is alive (its lock is
    held) is left alone. `conn` reads the audit log (the reader role); without it, pre-restore
    backups are kept pending for a later run to decide."""
    say = log or (lambda message: None)
    root = root_of(backup_root)
    if not _check_root(root):
        return []
    settled = []
    for directory in fs.pending_dirs(root):
        fd = fs.try_lock(directory)
        if fd is None:
            settled.append(Settled(directory.name, "in use", "its writer is still running"))
            continue
        try:
            if not any(directory.iterdir()) and time.time() - os.lstat(directory).st_mtime < PENDING_GRACE_SECONDS:
                settled.append(Settled(directory.name, "in use", "just created"))
                continue
            publish_it, why = False, "left by a writer that stopped before publishing it"
            if directory.name.startswith(fs.PENDING_PREFIX):
                try:
                    manifest = read_manifest(directory)
                except BackupError:
                    manifest = None
                    why = "incomplete: its writer stopped before finishing it"
                if manifest is not None and manifest.label.startswith("pre-restore of "):
                    if conn is None:
                        settled.append(Settled(directory.name, "kept", "its restore's outcome is not known yet"))
                        continue
                    publish_it = _restore_committed(conn, manifest)
                    why = ("its restore committed" if publish_it else
                           "its restore was rolled back (killed or failed): the restore never happened")
        except BaseException:
            os.close(fd)
            raise
        if publish_it:
            try:
                fs.publish(directory, directory.name.removeprefix(fs.PENDING_PREFIX))
            finally:
                os.close(fd)
            settled.append(Settled(directory.name, "published", why))
        else:
            fs.remove_locked(directory, fd)
            settled.append(Settled(directory.name, "removed", why))
        say(f"{settled[-1].action} {directory.name}: {why}")
    return settled
