-- hrms:depends-on: core/0002, discipline/0001, employees/0001, history/0001, imports/0001, ladders/0001, leave/0001, org/0001, payroll/0001
-- What each duty's login role may do (hrms_pipelines.roles creates the roles; this migration, run by
-- the migrator that owns the schema, grants their rights), and an audit trail that is append-only
-- for every one of them, the owner included.

DO $$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(r, ', ') INTO missing
    FROM unnest(ARRAY['hrms_migrator', 'hrms_importer', 'hrms_restorer', 'hrms_reader']) AS r
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'duty role(s) % do not exist: create them first (python -m hrms_pipelines.roles sql)', missing;
    END IF;
END
$$;

-- Reader: asset checks, sensors, read-only reports; records failure alerts. Never the password hashes.
GRANT USAGE ON SCHEMA hrms TO hrms_reader, hrms_restorer;
GRANT USAGE ON SCHEMA hrms_meta TO hrms_reader;
GRANT SELECT ON hrms_meta.migration_ledger TO hrms_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA hrms TO hrms_reader;
REVOKE SELECT ON hrms.core_useraccount FROM hrms_reader;
GRANT SELECT (id, username, email, role_id, is_superuser, is_active, created_at, last_login)
    ON hrms.core_useraccount TO hrms_reader;
GRANT INSERT ON hrms.core_alert TO hrms_reader;

-- Importer: no UPDATE of the audit trail; on import records only the outcome of its own import;
-- access control and login accounts are inserted by the seed, never changed.
REVOKE UPDATE ON hrms.core_auditlog FROM hrms_importer;
REVOKE UPDATE ON hrms.imports_importrecord FROM hrms_importer;
GRANT UPDATE (outcome, rows_read, inserted, updated, unchanged, skipped, rejected, message, finished_at)
    ON hrms.imports_importrecord TO hrms_importer;
REVOKE UPDATE ON hrms.core_alert FROM hrms_importer;
REVOKE INSERT ON hrms.core_alert FROM hrms_importer;
REVOKE UPDATE ON hrms.core_role, hrms.core_permission, hrms.core_rolepermission, hrms.core_useraccount FROM hrms_importer;

-- A finished import record is final: only a running one may record its outcome.
CREATE FUNCTION hrms.imports_importrecord_final() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF OLD.outcome <> 'running' THEN
        RAISE EXCEPTION 'import record % is finished (%): it cannot change', OLD.id, OLD.outcome
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER hrms_guard_importrecord_final BEFORE UPDATE ON hrms.imports_importrecord
    FOR EACH ROW EXECUTE FUNCTION hrms.imports_importrecord_final();

-- Restorer: replaces rows of the tables an import stage backs up (restore_backup), nothing else.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    hrms.ladders_ladder, hrms.ladders_aspect, hrms.ladders_level,
    hrms.org_organization, hrms.org_department, hrms.org_tribe, hrms.org_chapter, hrms.org_team,
    hrms.employees_employee,
    hrms.history_timelineevent, hrms.history_compensationsnapshot, hrms.history_senioritysnapshot,
    hrms.imports_importrecord
TO hrms_restorer;
GRANT INSERT ON hrms.core_auditlog TO hrms_restorer;
DO $$
DECLARE
    seq text;
BEGIN
    FOR seq IN
        SELECT pg_get_serial_sequence('hrms.' || t, 'id')
        FROM unnest(ARRAY['ladders_ladder', 'ladders_aspect', 'ladders_level', 'org_organization', 'org_department',
                          'org_tribe', 'org_chapter', 'org_team', 'employees_employee', 'history_timelineevent',
                          'history_compensationsnapshot', 'history_senioritysnapshot', 'imports_importrecord']) AS t
    LOOP
        IF seq IS NOT NULL THEN
            EXECUTE format('GRANT SELECT, UPDATE ON SEQUENCE %s TO hrms_restorer', seq);
        END IF;
    END LOOP;
END
$$;

-- The audit log is append-only for every role, its owner included: UPDATE, DELETE and TRUNCATE are
-- revoked, and triggers refuse them (a cloned row trigger on every partition, a TRUNCATE trigger on
-- each). The one DELETE allowed is moving a row out of the default partition into its month (the
-- audit_log_partitions job), and a deferred check makes sure, at commit, that it arrived unchanged.
REVOKE UPDATE, DELETE, TRUNCATE ON hrms.core_auditlog FROM PUBLIC, hrms_migrator, hrms_importer, hrms_restorer, hrms_reader;

CREATE FUNCTION hrms.core_auditlog_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'core_auditlog_default' THEN
        RETURN OLD;  -- moved into its month; hrms_guard_auditlog_moved checks that at commit
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on %.% is refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION hrms.core_auditlog_moved() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM hrms.core_auditlog a
                   WHERE a.id = OLD.id AND a.created_at = OLD.created_at AND to_jsonb(a) = to_jsonb(OLD)) THEN
        RAISE EXCEPTION 'the audit log is append-only: row % (%) left the default partition without arriving in its month',
            OLD.id, OLD.created_at USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER hrms_guard_auditlog_rows BEFORE UPDATE OR DELETE ON hrms.core_auditlog
    FOR EACH ROW EXECUTE FUNCTION hrms.core_auditlog_append_only();
CREATE CONSTRAINT TRIGGER hrms_guard_auditlog_moved AFTER DELETE ON hrms.core_auditlog_default
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hrms.core_auditlog_moved();
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT 'hrms.core_auditlog'::regclass UNION ALL
                SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'hrms.core_auditlog'::regclass
    LOOP
        EXECUTE format('CREATE TRIGGER hrms_guard_auditlog_truncate BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION hrms.core_auditlog_append_only()', part);
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM PUBLIC, hrms_migrator', part);
    END LOOP;
END
$$;
-- The default partition keeps DELETE for its owner: the move described above.
GRANT DELETE ON hrms.core_auditlog_default TO hrms_migrator;

-- New actions: undo (of an import run or a backfill) and detach (of an old month, written first).
ALTER TABLE hrms.core_auditlog DROP CONSTRAINT core_auditlog_action_check;
ALTER TABLE hrms.core_auditlog ADD CONSTRAINT core_auditlog_action_check
    CHECK (action IN ('insert', 'update', 'restore', 'seed', 'backfill', 'undo', 'detach')) NOT VALID;
