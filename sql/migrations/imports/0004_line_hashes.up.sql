-- hrms:depends-on: imports/0003
-- Known lines (issue 19): a full export costs what changed, whatever came before it.
--
-- For every row a successful import of a users or history CSV file left equal to its line (inserted,
-- updated or found unchanged), the stage writes here, in its own transaction and set-based, the
-- natural key of the row (key_hash: md5 of the key as the stage normalises it) and a 16-byte
-- blake2b of the raw line bytes keyed by what gives them meaning (stage, file format, header line,
-- the options recorded with the import, and an epoch of the earlier stages' resets and ladder
-- updates). A later import skips a line, before parsing and validating it, only when its hash is the
-- hash of the newest entry of its key, written by an import record that still vouches
-- (hrms_pipelines.imports.shortcuts.vouches: no undo or restore reset its stage since).
-- A run that writes a key without a line hash (an Excel workbook, a CSV whose records span lines)
-- stores the key with line_hash NULL: the older hashes of that key stop vouching.
--
-- No foreign key to imports_importrecord (restore_backup of an older backup removes newer records).

CREATE TABLE hrms.imports_linehash (
    stage            text        NOT NULL CHECK (stage IN ('users', 'history')),
    import_record_id bigint      NOT NULL,
    key_hash         bytea       NOT NULL CHECK (length(key_hash) = 16),
    line_hash        bytea       CHECK (length(line_hash) = 16)
);
CREATE INDEX imports_linehash_line_idx ON hrms.imports_linehash (stage, line_hash) INCLUDE (key_hash, import_record_id);
CREATE INDEX imports_linehash_key_idx ON hrms.imports_linehash (stage, key_hash, import_record_id);

-- The import writes and reads the store, never changes or removes it.
GRANT SELECT, INSERT ON hrms.imports_linehash TO hrms_importer;
GRANT SELECT ON hrms.imports_linehash TO hrms_restorer, hrms_reader;

-- Writes by anyone but the import (a backfill, an undo, a restore, an administrator's UPDATE) make
-- the rows differ from the lines that wrote them: every statement that writes a table of a stage outside an
-- import stage (another role, or the import role in a backfill) moves that stage's counter, and the counter is part of what a line hash means, so no
-- line recorded before such a write vouches after it. (The import's own writes replace the entry of
-- each key they write.) Sequences: never rolled back, so a write rolled back also moves it -- the
-- next import then reads its file in full, which is only slower. The trigger is named hrms_guard_*: it
-- acts on nothing but the counter, so restore_backup (which refuses triggers that act beyond the rows) may fire it.
CREATE SEQUENCE hrms.imports_written_users;
CREATE SEQUENCE hrms.imports_written_history;
CREATE SEQUENCE hrms.imports_written_ladders;
GRANT SELECT ON SEQUENCE hrms.imports_written_users, hrms.imports_written_history, hrms.imports_written_ladders
    TO hrms_importer, hrms_reader;

-- Moves one of the three counters, by name only (never a sequence the caller names): any role that
-- may write these tables may call it (the default EXECUTE), none needs a right on the sequences.
CREATE FUNCTION hrms.imports_written_bump(counter text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    CASE counter
        WHEN 'users' THEN PERFORM nextval('hrms.imports_written_users');
        WHEN 'history' THEN PERFORM nextval('hrms.imports_written_history');
        WHEN 'ladders' THEN PERFORM nextval('hrms.imports_written_ladders');
    END CASE;
END
$$;

-- Runs as the writer: only an import stage's own writes move nothing -- the import role inside a
-- stage's transaction (which sets hrms.import_stage for its length). The same role's other writes (a
-- backfill, its undo) and every other role's move the counter.
CREATE FUNCTION hrms.imports_written_by_others() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF current_user <> 'hrms_importer' OR coalesce(current_setting('hrms.import_stage', true), '') <> 'on' THEN
        PERFORM hrms.imports_written_bump(TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER hrms_guard_imports_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hrms.employees_employee
    FOR EACH STATEMENT EXECUTE FUNCTION hrms.imports_written_by_others('users');
CREATE TRIGGER hrms_guard_imports_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hrms.history_timelineevent
    FOR EACH STATEMENT EXECUTE FUNCTION hrms.imports_written_by_others('history');
CREATE TRIGGER hrms_guard_imports_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hrms.history_compensationsnapshot
    FOR EACH STATEMENT EXECUTE FUNCTION hrms.imports_written_by_others('history');
CREATE TRIGGER hrms_guard_imports_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hrms.history_senioritysnapshot
    FOR EACH STATEMENT EXECUTE FUNCTION hrms.imports_written_by_others('history');
CREATE TRIGGER hrms_guard_imports_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hrms.ladders_ladder
    FOR EACH STATEMENT EXECUTE FUNCTION hrms.imports_written_by_others('ladders');
CREATE TRIGGER hrms_guard_imports_written AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hrms.ladders_level
    FOR EACH STATEMENT EXECUTE FUNCTION hrms.imports_written_by_others('ladders');
