DROP TABLE hrms.core_useraccount;
DROP TABLE hrms.core_rolepermission;
DROP TABLE hrms.core_permission;
DROP TABLE hrms.core_role;
DROP TABLE hrms.core_backfillcheckpoint;
DROP TABLE hrms.core_auditlog;
REVOKE USAGE ON SCHEMA hrms FROM hrms_importer;
-- The hrms_importer role is cluster-wide and may serve other databases: it is kept.
DROP SCHEMA hrms;
