"""The one Definitions object of the code location: every asset, check, job, schedule, sensor and
resource, gathered from the module of its concern."""

from __future__ import annotations

import os

import dagster as dg

from hrms_pipelines import alerts, run_worker, settings
from hrms_pipelines.io_manager import hrms_io_manager
from hrms_pipelines.backfills import jobs as backfill_jobs, sensors as backfill_sensors
from hrms_pipelines.migrations import jobs as migration_jobs
from hrms_pipelines.migrations import check_job, sensors as migration_sensors
from hrms_pipelines.backups import jobs as backup_jobs, schedules as backup_schedules
from hrms_pipelines import audit_partitions
from hrms_pipelines.seeding import assets as seed_assets, checks as seed_checks, jobs as seed_jobs
from hrms_pipelines.resources import HrmsDatabase
from hrms_pipelines.imports import assets as import_assets, checks as import_checks
from hrms_pipelines.imports import jobs as import_jobs, schedules as import_schedules
from hrms_pipelines.imports.options import RESOURCE_KEY as IMPORT_OPTIONS_KEY, ImportOptions


def import_options() -> ImportOptions:
    """Run-config defaults of the imports; HRMS_IMPORT_CREATE_USERS=true makes create_users the default
    (what a UI launch gets without opening the launchpad)."""
    create_users = os.environ.get(settings.IMPORT_CREATE_USERS_ENV, "").strip().lower() in ("1", "true", "yes")
    return ImportOptions(create_users=create_users)


defs = dg.Definitions(
    assets=[
        seed_assets.reference_data,
        *import_assets.import_assets,
        audit_partitions.core_auditlog_partitions,
    ],
    asset_checks=[
        seed_checks.fixture_rows_present,
        *import_checks.import_checks,
        audit_partitions.audit_log_default_partition_empty,
        audit_partitions.audit_log_months_ahead_covered,
    ],
    jobs=[
        migration_jobs.apply_migrations,
        migration_jobs.revert_migrations,
        check_job.check_migrations,
        backup_jobs.restore_backup,
        backup_jobs.prune_backups,
        backup_jobs.backup_snapshot,
        import_jobs.hrms_import,
        import_jobs.hrms_import_dry_run,
        import_jobs.validate_hr_data,
        import_jobs.undo_import,
        seed_jobs.seed_reference_data,
        seed_jobs.seed_environment,
        audit_partitions.audit_log_partitions,
        backfill_jobs.data_backfill,
        backfill_jobs.field_backfill,
        backfill_jobs.undo_backfill,
    ],
    schedules=[
        audit_partitions.audit_log_partitions_daily,
        import_schedules.hrms_import_nightly,
        import_schedules.validate_hr_data_weekly,
        backup_schedules.prune_backups_daily,
        backup_schedules.backup_snapshot_weekly,
    ],
    sensors=[
        migration_sensors.migration_files_sensor,
        alerts.hrms_run_failure_alerts,
        *backfill_sensors.sensors,
    ],
    resources={
        "hrms_db": HrmsDatabase(),
        "io_manager": hrms_io_manager,
        IMPORT_OPTIONS_KEY: import_options(),
        "alert_notifier": alerts.notifier_from_environment(),
    },
    # Every step of a run talks to the same database and most hold one transaction: one process
    # per run is faster (no per-step interpreter start) and keeps runs self-contained. It records
    # the run's process for run monitoring (run_worker.py): a run whose process dies is marked failed.
    executor=run_worker.hrms_in_process_executor,
)
