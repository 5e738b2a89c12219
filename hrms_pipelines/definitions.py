"""The one Definitions object of the code location: every asset, check, job, schedule, sensor and
resource, gathered from the module of its concern."""

from __future__ import annotations

import os

import dagster as dg

from hrms_pipelines import settings
from hrms_pipelines.backfills import jobs as backfill_jobs
from hrms_pipelines.migrations import jobs as migration_jobs
from hrms_pipelines.migrations import check_job, sensors as migration_sensors
from hrms_pipelines import restore as restore_jobs
from hrms_pipelines import audit_partitions
from hrms_pipelines.seeding import assets as seed_assets, checks as seed_checks, jobs as seed_jobs
from hrms_pipelines.resources import HrmsDatabase


def hr_database() -> HrmsDatabase:
    """HRMS_DATABASE_URL when it is set; otherwise the embedded PostgreSQL under .hrms/."""
    if os.environ.get(settings.DATABASE_URL_ENV):
        return HrmsDatabase(url=dg.EnvVar(settings.DATABASE_URL_ENV))
    return HrmsDatabase()


defs = dg.Definitions(
    assets=[
        seed_assets.reference_data,
        audit_partitions.core_auditlog_partitions,
    ],
    asset_checks=[
        seed_checks.fixture_rows_present,
        audit_partitions.audit_log_default_partition_empty,
        audit_partitions.audit_log_months_ahead_covered,
    ],
    jobs=[
        migration_jobs.apply_migrations,
        migration_jobs.revert_migrations,
        check_job.check_migrations,
        restore_jobs.restore_backup,
        seed_jobs.seed_reference_data,
        seed_jobs.seed_environment,
        audit_partitions.audit_log_partitions,
        backfill_jobs.data_backfill,
        backfill_jobs.field_backfill,
    ],
    schedules=[
        audit_partitions.audit_log_partitions_daily,
    ],
    sensors=[
        migration_sensors.migration_files_sensor,
    ],
    resources={"hrms_db": hr_database()},
    # Every step of a run talks to the same database and most hold one transaction: one process
    # per run is faster (no per-step interpreter start) and keeps runs self-contained.
    executor=dg.in_process_executor,
)
