ALTER TABLE hrms.core_auditlog DROP CONSTRAINT core_auditlog_action_check;
ALTER TABLE hrms.core_auditlog ADD CONSTRAINT core_auditlog_action_check
    CHECK (action IN ('insert', 'update', 'restore', 'seed', 'backfill')) NOT VALID;
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT 'hrms.core_auditlog'::regclass UNION ALL
                SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'hrms.core_auditlog'::regclass
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS hrms_guard_auditlog_truncate ON %s', part);
        EXECUTE format('GRANT UPDATE, DELETE, TRUNCATE ON %s TO hrms_migrator', part);
    END LOOP;
END
$$;
DROP TRIGGER hrms_guard_auditlog_moved ON hrms.core_auditlog_default;
DROP TRIGGER hrms_guard_auditlog_rows ON hrms.core_auditlog;
DROP FUNCTION hrms.core_auditlog_moved();
DROP FUNCTION hrms.core_auditlog_append_only();
REVOKE ALL ON hrms.core_auditlog FROM hrms_restorer;
REVOKE ALL ON
    hrms.ladders_ladder, hrms.ladders_aspect, hrms.ladders_level,
    hrms.org_organization, hrms.org_department, hrms.org_tribe, hrms.org_chapter, hrms.org_team,
    hrms.employees_employee,
    hrms.history_timelineevent, hrms.history_compensationsnapshot, hrms.history_senioritysnapshot,
    hrms.imports_importrecord
FROM hrms_restorer;
DO $$
DECLARE
    seq text;
BEGIN
    FOR seq IN SELECT format('%I.%I', sequence_schema, sequence_name) FROM information_schema.sequences
               WHERE sequence_schema = 'hrms'
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM hrms_restorer', seq);
    END LOOP;
END
$$;
DROP TRIGGER hrms_guard_importrecord_final ON hrms.imports_importrecord;
DROP FUNCTION hrms.imports_importrecord_final();
GRANT UPDATE ON hrms.core_role, hrms.core_permission, hrms.core_rolepermission, hrms.core_useraccount TO hrms_importer;
GRANT INSERT, UPDATE ON hrms.core_alert TO hrms_importer;
REVOKE UPDATE (outcome, rows_read, inserted, updated, unchanged, skipped, rejected, message, finished_at)
    ON hrms.imports_importrecord FROM hrms_importer;
GRANT UPDATE ON hrms.imports_importrecord TO hrms_importer;
GRANT UPDATE ON hrms.core_auditlog TO hrms_importer;
REVOKE INSERT ON hrms.core_alert FROM hrms_reader;
REVOKE ALL ON ALL TABLES IN SCHEMA hrms FROM hrms_reader;
REVOKE ALL ON hrms_meta.migration_ledger FROM hrms_reader;
REVOKE USAGE ON SCHEMA hrms_meta FROM hrms_reader;
REVOKE USAGE ON SCHEMA hrms FROM hrms_reader, hrms_restorer;
