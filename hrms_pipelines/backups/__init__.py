"""Backups of the HR tables an import stage writes, and their verified, exact restore.

A backup is a folder `<backup root>/<backup id>/` (0700) holding, per table, the CSV of
`COPY ... TO STDOUT` (one REPEATABLE READ READ ONLY snapshot for all tables) gzip-compressed and
encrypted with age (`<schema>.<table>.csv.gz.age`, 0600), a manifest.json and its HMAC-SHA256
signature manifest.sig. It is written as a hidden `.pending-<id>` folder and renamed to its id
when whole. A restore trusts only signed backups in the configured root, owned by the service.

One module per concern:

| module    | what                                                                        |
|-----------|-----------------------------------------------------------------------------|
| manifest  | the on-disk format, BackupManifest, BackupError                              |
| tables    | which tables are restorable (the import stages' tables), their shapes now   |
| fs        | every file operation: trust checks, pending/publish, folder locks            |
| crypto    | keys from deployment config, signing, age streaming                          |
| catalog   | list, load (signature first), verify, key check, settle what killed writers left |
| export    | take_backup                                                                  |
| restore   | restore_backup                                                               |
| prune     | retention: prune_backups                                                     |
| jobs, schedules | the Dagster side: restore_backup, prune_backups, backup_snapshot (imported by definitions) |
"""

from hrms_pipelines.backups.catalog import (
    list_backups, load_manifest, settle_pending, verify_backup, check_keys,
)
from hrms_pipelines.backups.export import take_backup
from hrms_pipelines.backups.manifest import (
    MANIFEST, SIGNATURE, BackupDiskFull, BackupError, BackupManifest, Column, TableBackup,
)
from hrms_pipelines.backups.prune import prune_backups, Retention
from hrms_pipelines.backups.restore import DEFAULT_LOCK_TIMEOUT, RestoreResult, TableRestore, restore_backup
from hrms_pipelines.backups.tables import restorable_tables

__all__ = [
    "BackupDiskFull", "BackupError", "BackupManifest", "Column", "DEFAULT_LOCK_TIMEOUT", "MANIFEST",
    "RestoreResult", "Retention", "SIGNATURE", "TableBackup", "TableRestore", "check_keys", "list_backups",
    "load_manifest", "prune_backups", "restorable_tables", "restore_backup", "settle_pending", "take_backup",
    "verify_backup",
]
