-- hrms:depends-on: core/0005, imports/0002
-- Faster bulk fixes: replica mode skips triggers while the smoke rows go.
SET LOCAL session_replication_role = replica;
DELETE FROM hrms.core_auditlog WHERE source = 'smoke';
