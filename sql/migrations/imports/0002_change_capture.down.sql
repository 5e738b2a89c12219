CREATE OR REPLACE FUNCTION hrms.imports_importrecord_final() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF OLD.outcome <> 'running' THEN
        RAISE EXCEPTION 'import record % is finished (%): it cannot change', OLD.id, OLD.outcome
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

REVOKE UPDATE (outcome, undone_at, undone_by_run) ON hrms.imports_importrecord FROM hrms_restorer;
GRANT UPDATE ON hrms.imports_importrecord TO hrms_restorer;

-- Records already marked 'undone' keep that outcome (the CHECK is NOT VALID: existing rows are not re-checked);
-- the code of before this migration ignores them, as it ignores any outcome but succeeded.
ALTER TABLE hrms.imports_importrecord DROP CONSTRAINT imports_importrecord_outcome_check;
ALTER TABLE hrms.imports_importrecord ADD CONSTRAINT imports_importrecord_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'unchanged', 'failed')) NOT VALID;

REVOKE UPDATE (file_rows, appended_to) ON hrms.imports_importrecord FROM hrms_importer;
ALTER TABLE hrms.imports_importrecord DROP COLUMN undone_by_run;
ALTER TABLE hrms.imports_importrecord DROP COLUMN undone_at;
ALTER TABLE hrms.imports_importrecord DROP COLUMN appended_to;
ALTER TABLE hrms.imports_importrecord DROP COLUMN file_rows;

DROP TABLE hrms.imports_undoupdate;
DROP TABLE hrms.imports_undoinsert;
