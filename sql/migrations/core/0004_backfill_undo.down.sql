-- Drops the undo records of every backfill run with them: after this, no backfill can be undone.
ALTER TABLE hrms.core_backfillcheckpoint DROP CONSTRAINT core_backfillcheckpoint_status_check;
UPDATE hrms.core_backfillcheckpoint SET status = 'failed' WHERE status = 'undone';
ALTER TABLE hrms.core_backfillcheckpoint ADD CONSTRAINT core_backfillcheckpoint_status_check
    CHECK (status IN ('running', 'completed', 'failed')) NOT VALID;
DROP VIEW hrms.core_backfillundo_rows;
DROP TABLE hrms.core_backfillundo;
DROP TRIGGER hrms_guard_backfillrun_undo_final ON hrms.core_backfillrun;
DROP TABLE hrms.core_backfillrun;
DROP FUNCTION hrms.core_backfillrun_undo_final();
