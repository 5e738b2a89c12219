-- hrms:depends-on: imports/0004
-- Known lines, one entry per key (issue 19): only the newest entry of a key could ever vouch for a
-- line (imports/0004), so the older ones were dead weight -- the store grew by every line of every
-- file read in full, and the lookup probed past them. From here on the store holds at most one entry
-- per (stage, natural key): an import upserts the entries of the rows it left equal to their lines
-- (INSERT ... ON CONFLICT DO UPDATE). The import role gets UPDATE on the store, never DELETE (the
-- analyzer's import-role-never-deletes). The store is a cache: an entry lost can only make a night slower.
--
-- The import no longer probes an index per line: it reads the stage's vouching entries once per file
-- (hrms_pipelines.imports.linehash), so the index on (stage, line_hash) goes.

-- Keep the newest entry of each key (what the lookup read already), drop the superseded ones.
DELETE FROM hrms.imports_linehash
WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER (PARTITION BY stage, key_hash
                                                                 ORDER BY import_record_id DESC) AS newer
                                 FROM hrms.imports_linehash) ranked
               WHERE newer > 1);

-- hrms:allow require-concurrent-index-deletion reason: the store is read and written only by import stages and is at most one row per key of the employees and history tables; in one transaction with the DELETE above no import can add a duplicate key before the unique build (CONCURRENTLY would run outside it), and a lock wait only delays a night (lock_timeout)
DROP INDEX hrms.imports_linehash_line_idx;
-- hrms:allow require-concurrent-index-deletion reason: the store is read and written only by import stages and is at most one row per key of the employees and history tables; in one transaction with the DELETE above no import can add a duplicate key before the unique build (CONCURRENTLY would run outside it), and a lock wait only delays a night (lock_timeout)
DROP INDEX hrms.imports_linehash_key_idx;
-- hrms:allow require-concurrent-index-creation reason: the store is read and written only by import stages and is at most one row per key of the employees and history tables; in one transaction with the DELETE above no import can add a duplicate key before the unique build (CONCURRENTLY would run outside it), and a lock wait only delays a night (lock_timeout)
CREATE UNIQUE INDEX imports_linehash_key_uq ON hrms.imports_linehash (stage, key_hash);

GRANT UPDATE ON hrms.imports_linehash TO hrms_importer;
