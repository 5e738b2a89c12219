"""A killed backfill's checkpoint says so as soon as Dagster marks its run failed or canceled.

A backfill that fails by itself marks its checkpoint 'failed' (engine.py); one whose process is
killed (kill -9, a lost node) cannot, and its checkpoint would say 'running' until the next launch.
Run monitoring (or a user) marks such a run failed or canceled; these sensors then set every
checkpoint that run still holds as 'running' to 'interrupted', with why and when. The next launch
resumes from it as from any checkpoint.
"""

from __future__ import annotations

import dagster as dg
from psycopg.types.json import Jsonb

from hrms_pipelines import settings
from hrms_pipelines.errors import error_boundary
from hrms_pipelines.backfills.jobs import data_backfill, field_backfill, undo_backfill
from hrms_pipelines.resources import IMPORTER, HrmsDatabase

MONITORED = [data_backfill, field_backfill, undo_backfill]


def mark_interrupted(hrms_db: HrmsDatabase, run_id: str, run_status: str) -> list[str]:
    """Set the checkpoints run `run_id` left 'running' to 'interrupted'; returns their names."""
    with hrms_db.transaction(IMPORTER) as conn:
        rows = conn.execute(
            f"""UPDATE {settings.HR_SCHEMA}.core_backfillcheckpoint
                SET status = 'interrupted', updated_at = now(),
                    params = params || jsonb_build_object('interrupted', %s::jsonb || jsonb_build_object('at', now()))
                WHERE run_id = %s AND status = 'running' RETURNING name""",
            [Jsonb({"run_status": run_status, "run_id": run_id}), run_id]).fetchall()
    return [r[0] for r in rows]


def _report(context: dg.RunStatusSensorContext, hrms_db: HrmsDatabase, status: str) -> None:
    run_id = context.dagster_run.run_id
    names = mark_interrupted(hrms_db, run_id, status)
    if names:
        context.log.info(f"run {run_id} {status.lower()}: checkpoint(s) {', '.join(names)} now read 'interrupted'; "
                         "launch the backfill again to resume")


@dg.run_failure_sensor(
    name="backfill_interrupted_on_failure", monitored_jobs=MONITORED, minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed backfill run whose checkpoint still says 'running' (killed): marks it 'interrupted'.")
@error_boundary
def backfill_interrupted_on_failure(context: dg.RunFailureSensorContext, hrms_db: HrmsDatabase) -> None:
    _report(context, hrms_db, "FAILURE")


@dg.run_status_sensor(
    name="backfill_interrupted_on_cancel", run_status=dg.DagsterRunStatus.CANCELED, monitored_jobs=MONITORED,
    minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING,
    description="A canceled backfill run whose checkpoint still says 'running': marks it 'interrupted'.")
@error_boundary
def backfill_interrupted_on_cancel(context: dg.RunStatusSensorContext, hrms_db: HrmsDatabase) -> None:
    _report(context, hrms_db, "CANCELED")


sensors = [backfill_interrupted_on_failure, backfill_interrupted_on_cancel]
