-- Back to imports/0004: the store INSERT-only for the import role, indexed for per-line probes.
-- The entries kept (one per key, the newest) are what imports/0004's lookup reads.
REVOKE UPDATE ON hrms.imports_linehash FROM hrms_importer;
DROP INDEX hrms.imports_linehash_key_uq;
CREATE INDEX imports_linehash_key_idx ON hrms.imports_linehash (stage, key_hash, import_record_id);
CREATE INDEX imports_linehash_line_idx ON hrms.imports_linehash (stage, line_hash) INCLUDE (key_hash, import_record_id);
