-- hrms:depends-on: imports/0002
-- Shortcuts an import takes on the word of earlier import records (a file unchanged since a
-- successful import, a file that begins with the bytes of the last one) hold only while nothing
-- else removed or put back rows those records vouch for. An undo_import or a restore_backup
-- writes a reset here: no import record of that stage up to `through_record` vouches any more,
-- so the next import of a file of that kind reads it in full (hrms_pipelines.imports.shortcuts).

CREATE TABLE hrms.imports_shortcutreset (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stage           text        NOT NULL CHECK (stage IN ('ladders', 'org', 'users', 'history')),
    through_record  bigint      NOT NULL CHECK (through_record >= 0),
    reason          text        NOT NULL CHECK (btrim(reason) <> ''),
    run_id          text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imports_shortcutreset_stage_idx ON hrms.imports_shortcutreset (stage, through_record);

-- Undo and restore (the restorer) write resets; the import and the nightly schedule read them.
GRANT SELECT, INSERT ON hrms.imports_shortcutreset TO hrms_restorer;
GRANT SELECT ON hrms.imports_shortcutreset TO hrms_importer, hrms_reader;
