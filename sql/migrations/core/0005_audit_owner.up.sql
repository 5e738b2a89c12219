-- hrms:depends-on: core/0004
-- The audit log belongs to nobody who logs in: hrms.core_auditlog, its partitions and its trigger
-- functions pass from the migrator to hrms_audit_owner, a NOLOGIN role no duty is a member of (see
-- hrms_pipelines/audit_owner.py). From here on no migration, however written, can alter, disable a
-- trigger of, drop, detach, truncate or rewrite it, or grant itself rights on it: the migrator reads
-- and appends; it attaches and detaches months only through hrms_audit's narrow functions.
-- The administrator's bootstrap creates the owner role and those functions (python -m
-- hrms_pipelines.roles sql; the embedded server runs it at every start).

DO $$
BEGIN
    IF pg_catalog.to_regprocedure('hrms_audit.core_auditlog_take_over()') IS NULL THEN
        RAISE EXCEPTION 'hrms_audit.core_auditlog_take_over() does not exist: an administrator runs the output of '
                        '`python -m hrms_pipelines.roles sql` first (it creates the audit log''s owner role)';
    END IF;
END
$$;

SELECT hrms_audit.core_auditlog_take_over();

-- Whoever ran this, the migrator now owns no part of the audit log, nor the schema it lives in.
DO $$
DECLARE
    kept text;
BEGIN
    SELECT pg_catalog.string_agg(c.oid::pg_catalog.regclass::pg_catalog.text, ', ') INTO kept
    FROM pg_catalog.pg_class c
    WHERE (c.oid OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass
           OR c.oid OPERATOR(pg_catalog.=) ANY (SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                                                WHERE i.inhparent OPERATOR(pg_catalog.=) 'hrms.core_auditlog'::pg_catalog.regclass))
      AND pg_catalog.pg_has_role('hrms_migrator', c.relowner, 'MEMBER');
    IF kept IS NOT NULL THEN
        RAISE EXCEPTION 'the migrator still owns % of the audit log', kept;
    END IF;
    IF pg_catalog.pg_has_role('hrms_migrator', (SELECT n.nspowner FROM pg_catalog.pg_namespace n
                                                WHERE n.nspname OPERATOR(pg_catalog.=) 'hrms'), 'MEMBER') THEN
        RAISE EXCEPTION 'the migrator owns the hrms schema (and could drop the audit log): an administrator runs '
                        'the output of `python -m hrms_pipelines.roles sql` first';
    END IF;
END
$$;

-- The importer: nothing of access control. The import stages write employees, never login accounts,
-- roles or their permissions; the seed writes those as the migrator (hrms_pipelines.seeding.loader).
-- So the importer can neither read a password hash, nor create or promote an application account,
-- nor grant a permission.
REVOKE ALL ON hrms.core_useraccount, hrms.core_role, hrms.core_permission, hrms.core_rolepermission FROM hrms_importer;
