-- hrms:depends-on: core/0003
-- Change capture for the import stages, and undo of a whole import run (issue 12).
--
-- Each stage records, in its own transaction, exactly what it changed: the ids of the rows it
-- inserted (imports_undoinsert, one row per table and import record, the ids as an array) and the
-- full row before every update (imports_undoupdate, the row type's text form, updated_at included,
-- and an md5 of the row as the stage left it, so an undo can tell whether anything changed it since).
-- The HR data stays in the HR database: before-images of salaries belong here, not in files.
--
-- No foreign key to imports_importrecord: restore_backup of an older backup removes newer import
-- records, and a reference from here would make it refuse. An undo only considers entries whose
-- import record still exists and succeeded.

CREATE TABLE hrms.imports_undoinsert (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    import_record_id bigint      NOT NULL,
    table_name       text        NOT NULL CHECK (table_name IN (
                                     'ladders_ladder', 'ladders_aspect', 'ladders_level', 'org_organization',
                                     'org_department', 'org_tribe', 'org_chapter', 'org_team', 'employees_employee',
                                     'history_timelineevent', 'history_compensationsnapshot', 'history_senioritysnapshot')),
    row_ids          bigint[]    NOT NULL CHECK (cardinality(row_ids) > 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imports_undoinsert_record_idx ON hrms.imports_undoinsert (import_record_id);

CREATE TABLE hrms.imports_undoupdate (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    import_record_id bigint      NOT NULL,
    table_name       text        NOT NULL CHECK (table_name IN (
                                     'ladders_ladder', 'ladders_aspect', 'ladders_level', 'org_organization',
                                     'org_department', 'org_tribe', 'org_chapter', 'org_team', 'employees_employee',
                                     'history_timelineevent', 'history_compensationsnapshot', 'history_senioritysnapshot')),
    row_id           bigint      NOT NULL,
    before           text        NOT NULL,
    after_md5        uuid        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imports_undoupdate_record_idx ON hrms.imports_undoupdate (import_record_id);
CREATE INDEX imports_undoupdate_row_idx ON hrms.imports_undoupdate (table_name, row_id);

-- The import writes the store, never changes or removes it; undo and checks read it.
GRANT INSERT ON hrms.imports_undoinsert, hrms.imports_undoupdate TO hrms_importer;
GRANT SELECT ON hrms.imports_undoinsert, hrms.imports_undoupdate TO hrms_restorer, hrms_reader;

-- Import records: how many data rows the whole file holds (row numbers of an appended tail go on
-- from there), which import a file extends when only its appended tail was imported, and who undid it.
ALTER TABLE hrms.imports_importrecord ADD COLUMN file_rows bigint;
ALTER TABLE hrms.imports_importrecord ADD COLUMN appended_to bigint;
ALTER TABLE hrms.imports_importrecord ADD COLUMN undone_at timestamptz;
ALTER TABLE hrms.imports_importrecord ADD COLUMN undone_by_run text;
GRANT UPDATE (file_rows, appended_to) ON hrms.imports_importrecord TO hrms_importer;

ALTER TABLE hrms.imports_importrecord DROP CONSTRAINT imports_importrecord_outcome_check;
ALTER TABLE hrms.imports_importrecord ADD CONSTRAINT imports_importrecord_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'unchanged', 'failed', 'undone')) NOT VALID;

-- The restorer marks the records of an undone run; it never rewrites a record otherwise (a restore
-- deletes and inserts whole rows).
REVOKE UPDATE ON hrms.imports_importrecord FROM hrms_restorer;
GRANT UPDATE (outcome, undone_at, undone_by_run) ON hrms.imports_importrecord TO hrms_restorer;

-- A finished import record stays final, with one exception: the restorer may mark a succeeded one
-- undone (undo_import), changing nothing else.
CREATE OR REPLACE FUNCTION hrms.imports_importrecord_final() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF OLD.outcome = 'running' AND NEW.outcome <> 'undone' THEN
        RETURN NEW;
    END IF;
    IF OLD.outcome = 'succeeded' AND NEW.outcome = 'undone' AND current_user = 'hrms_restorer'
       AND (to_jsonb(NEW) - ARRAY['outcome', 'undone_at', 'undone_by_run'])
           = (to_jsonb(OLD) - ARRAY['outcome', 'undone_at', 'undone_by_run']) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'import record % is finished (%): it cannot change (only the restorer may mark a succeeded import undone)',
        OLD.id, OLD.outcome USING ERRCODE = 'insufficient_privilege';
END
$$;
