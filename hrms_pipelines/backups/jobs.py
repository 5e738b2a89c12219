"""The Dagster side of backups beyond the imports' own backup assets: `restore_backup` (a verified,
exact restore), `prune_backups` (retention) and `backup_snapshot` (a full backup of every restorable
table). Their schedules are in hrms_pipelines.backups.schedules, stopped by default.

No job's run config chooses a folder, a table or a retention: the backup root, the keys and the
retention are deployment configuration (see hrms_pipelines.backups.crypto and .prune); a restore
names a backup by its id, a folder name inside the backup root.

restore_backup: verify_backup_files -> restore_tables

    ops:
      verify_backup_files:
        config: {backup_id: 20260301T020000Z-1a2b3c4d, dry_run: true}

The first op settles what killed restores left (a pre-restore backup of a restore that never
committed is removed), then checks the backup: the root and folder owned by the service and private,
the manifest's signature, every file's size and sha256, and that the configured identity decrypts
every file. An unsigned, foreign, tampered, partial or unknown backup, or a wrong or missing key,
fails here, naming why, and nothing is touched. The second op restores as the restorer role (see
hrms_pipelines.backups.restore).
"""

from dataclasses import dataclass

import dagster as dg

from hrms_pipelines import settings
from hrms_pipelines.backups import catalog, export, prune, restore, tables
from hrms_pipelines.backups.manifest import BackupError
from hrms_pipelines.errors import error_boundary
from hrms_pipelines.resources import READER, RESTORER, HrmsDatabase
from hrms_pipelines.retries import transient_retries

SNAPSHOT_LABEL = "snapshot"


class PruneBackupsConfig(dg.Config):
    dry_run: bool = False
    """List what the deployment's retention would remove (and the unpublished folders it would
    settle); remove nothing."""


@dg.op(description="Remove the backups the deployment's retention lets go (HRMS_BACKUP_KEEP_NEWEST, "
                   "HRMS_BACKUP_KEEP_DAYS); never a group's newest, never one a restore is reading.")
@transient_retries
def prune_backup_folders(context: dg.OpExecutionContext, config: PruneBackupsConfig, hrms_db: HrmsDatabase) -> None:
    try:
        with hrms_db.connection(READER) as conn:
            result = prune.prune_backups(conn, dry_run=config.dry_run, log=context.log.info)
    except BackupError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(
        (f"dry run: would remove {len(result.removed)} backup(s)" if result.dry_run else
         f"removed {len(result.removed)} backup(s)") + f", kept {len(result.kept)} ({result.retention.describe()}):\n"
        + result.table_markdown())
    context.add_output_metadata(result.to_metadata())


@dg.job(description="Apply the deployment's backup retention: remove old backups (never a group's newest, never one "
                    "being restored), settle folders killed writers left. Dry run lists what it would remove.",
        tags={"hrms/kind": "backup"})
def prune_backups() -> None:
    prune_backup_folders()


@dg.op(description="A full, encrypted and signed backup of every restorable table, from one snapshot, as the "
                   "reader role.")
@transient_retries
def take_snapshot(context: dg.OpExecutionContext, hrms_db: HrmsDatabase) -> None:
    names = tables.restorable_tables()
    try:
        with hrms_db.connection(READER) as conn:
            catalog.settle_pending(conn, log=context.log.info)
            manifest = export.take_backup(conn, names, label=SNAPSHOT_LABEL, run_id=context.run_id)
    except BackupError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"snapshot {manifest.backup_id}: {manifest.total_rows} rows of {len(manifest.tables)} tables, "
                     f"{manifest.total_bytes:,} bytes in {manifest.directory}")
    context.add_output_metadata(manifest.to_metadata())


@dg.job(description="A full backup (snapshot) of every table the import stages back up, restorable with "
                    "restore_backup.", tags={"hrms/kind": "backup"})
def backup_snapshot() -> None:
    take_snapshot()



class RestoreBackupConfig(dg.Config):
    backup_id: str
    """The backup to restore: its id, a folder name in the deployment's backup folder (HRMS_BACKUP_DIR), e.g.
    20260301T020000Z-1a2b3c4d. Backups are only ever read from that folder."""
    dry_run: bool = False
    """Verify, stage and compute what would change, then roll back: nothing is written anywhere."""
    pre_restore_backup: bool = True
    """Back up the current rows of the same tables first (inside the restore's own transaction)."""
    lock_timeout: str = restore.DEFAULT_LOCK_TIMEOUT
    """How long to wait for the tables (writers in progress) before giving up."""
    statement_timeout: str = ""
    """Longest a single statement may run; empty: no limit."""


@dataclass
class VerifiedBackup:
    settings: dict
    backup_id: str


@dg.op(description="Check the backup's signature, every file's size and sha256 and the decryption key; refuse "
                   "unsigned, foreign, tampered, partial or unknown backups.")
@error_boundary
def verify_backup_files(context: dg.OpExecutionContext, config: RestoreBackupConfig, hrms_db: HrmsDatabase) -> VerifiedBackup:
    settings_ = config.model_dump()
    try:
        with hrms_db.connection(READER) as conn:
            catalog.settle_pending(conn, log=context.log.info)
        manifest = catalog.load_manifest(config.backup_id)
        catalog.verify_backup(manifest)
        catalog.check_keys(manifest)
    except BackupError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(
        f"backup {manifest.backup_id} ({manifest.label!r}, taken {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f" by run {manifest.run_id or '-'}) verified: {len(manifest.tables)} table(s), {manifest.total_rows} rows"
    )
    context.add_output_metadata({**manifest.to_metadata(), "label": manifest.label, "created_at": manifest.created_at.isoformat()})
    return VerifiedBackup(settings=settings_, backup_id=manifest.backup_id)


@dg.op(
    description="Restore the backup's tables exactly in one transaction: pre-restore backup, staging, "
    "replace differing rows, exactness check, audit rows.",
    pool=settings.WRITER_POOL,
)
@transient_retries
def restore_tables(context: dg.OpExecutionContext, verified: VerifiedBackup, hrms_db: HrmsDatabase) -> None:
    options = verified.settings
    context.log.info(f"database {hrms_db.display_url(RESTORER)}")
    with hrms_db.connection(RESTORER) as conn:
        try:
            result = restore.restore_backup(
                conn, verified.backup_id, run_id=context.run_id,
                pre_restore_backup=options["pre_restore_backup"], dry_run=options["dry_run"],
                lock_timeout=options["lock_timeout"], statement_timeout=options["statement_timeout"] or None,
                log=context.log.info,
            )
        except BackupError as exc:
            raise dg.Failure(str(exc)) from exc
    context.log.info(
        ("dry run, nothing written; a restore would do:\n" if result.dry_run else "restored:\n")
        + result.table_markdown()
        + (f"\npre-restore backup: {result.pre_restore_backup_id}" if result.pre_restore_backup else "")
    )
    metadata = result.to_metadata()
    if result.pre_restore_backup is not None:
        metadata["pre_restore_backup_path"] = dg.MetadataValue.path(str(result.pre_restore_backup.directory))
    context.add_output_metadata(metadata)


@dg.job(
    description="Restore a backup's tables exactly, after checking its signature, checksums and key, in one "
    "transaction; the current state is backed up first.",
    tags={"hrms/kind": "restore"},
)
def restore_backup() -> None:
    restore_tables(verify_backup_files())
