ALTER TABLE hrms.core_backfillcheckpoint DROP CONSTRAINT core_backfillcheckpoint_status_check;
UPDATE hrms.core_backfillcheckpoint SET status = 'failed' WHERE status = 'interrupted';
ALTER TABLE hrms.core_backfillcheckpoint ADD CONSTRAINT core_backfillcheckpoint_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'undone')) NOT VALID;
