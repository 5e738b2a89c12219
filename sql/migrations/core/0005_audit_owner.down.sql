-- Keeps the protection: the audit log stays with hrms_audit_owner. Reverting this migration only
-- removes its ledger row; reverting the migrations before it then fails where they would touch the
-- audit log (core/0003 drops its triggers, core/0001 drops it): PostgreSQL refuses the migrator
-- that. Giving the audit log back is an administrator's decision, made outside the migrations.
SELECT 1;  -- the importer keeps no rights on access control either
