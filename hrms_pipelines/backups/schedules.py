"""Schedules of the backup jobs; both stopped by default: the deployment turns them on in the UI
(Automation) once retention and the snapshot cadence suit it."""

from __future__ import annotations

import dagster as dg

from hrms_pipelines.backups.jobs import backup_snapshot, prune_backups

prune_backups_daily = dg.ScheduleDefinition(
    name="prune_backups_daily",
    job=prune_backups,
    cron_schedule="43 4 * * *",
    execution_timezone="UTC",
    description="Every day at 04:43 UTC: remove the backups the deployment's retention lets go.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

backup_snapshot_weekly = dg.ScheduleDefinition(
    name="backup_snapshot_weekly",
    job=backup_snapshot,
    cron_schedule="30 1 * * 0",
    execution_timezone="UTC",
    description="Every Sunday at 01:30 UTC: a full backup of every restorable table.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
