"""The Dagster side of backups beyond the imports' own: `prune_backups` (retention) and
`backup_snapshot` (a full backup of every restorable table). Their schedules are in
hrms_pipelines.backups.schedules, stopped by default.

Neither job's run config chooses a folder, a table or a retention: the backup root, the keys and
the retention are deployment configuration (see hrms_pipelines.backups.crypto and .prune).
"""


import dagster as dg

from hrms_pipelines.backups import catalog, export, prune, tables
from hrms_pipelines.backups.manifest import BackupError
from hrms_pipelines.resources import READER, HrmsDatabase
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
