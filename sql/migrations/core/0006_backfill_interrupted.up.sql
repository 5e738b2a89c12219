-- hrms:depends-on: core/0004
-- A backfill (or undo) checkpoint whose run Dagster marked failed or canceled while the checkpoint
-- still said 'running' (the process was killed before it could say so itself) reads 'interrupted':
-- the backfills' run-status sensors (hrms_pipelines/backfills/sensors.py) set it, as the import role.
ALTER TABLE hrms.core_backfillcheckpoint DROP CONSTRAINT core_backfillcheckpoint_status_check;
ALTER TABLE hrms.core_backfillcheckpoint ADD CONSTRAINT core_backfillcheckpoint_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'undone', 'interrupted')) NOT VALID;
