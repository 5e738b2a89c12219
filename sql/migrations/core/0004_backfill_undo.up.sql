-- hrms:depends-on: core/0003
-- Backfills that can be undone (hrms_pipelines/backfills/capture.py writes, undo.py reads):
--   core_backfillrun   one row per run of a backfill (its checkpoint name and the Dagster run id),
--                      where its checkpoint stood when it started, and, once undone, by which run;
--   core_backfillundo  the before-image of every row a backfill run changed (the changed columns'
--                      values before and after), written by the batch's own statement in the batch's
--                      transaction: a killed run leaves exactly its committed batches'.
-- Both are append-only for the job roles: the importer (backfills and their undo) inserts and
-- reads; it may only set a run's undo mark, once. The reader may read them.

CREATE TABLE hrms.core_backfillrun (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    backfill            text        NOT NULL CHECK (btrim(backfill) <> ''),
    run_id              text        NOT NULL CHECK (btrim(run_id) <> ''),
    table_name          text        NOT NULL,
    key_column          text        NOT NULL,
    from_key            bigint,
    rows_done_before    bigint      NOT NULL DEFAULT 0,
    batches_done_before integer     NOT NULL DEFAULT 0,
    started_at          timestamptz NOT NULL DEFAULT now(),
    undone_at           timestamptz,
    undone_by           text,
    undo_summary        jsonb,
    UNIQUE (backfill, run_id),
    CHECK ((undone_at IS NULL) = (undone_by IS NULL))
);
COMMENT ON TABLE hrms.core_backfillrun IS
    'one row per backfill run that may have changed rows; from_key/rows_done_before/batches_done_before: its checkpoint at the start (an undo rewinds to it); undone_*: the undo mark, set once';

-- One row per batch (and per batch.update of the batch: step), not per changed row: the keys and,
-- for each recorded column, the text form of its values before and after (an array literal, in the
-- order of keys), so that keeping them costs one insert per batch, whatever its size.
-- No foreign key to core_backfillrun: run_ref always comes from the run's own row.
CREATE TABLE hrms.core_backfillundo (
    run_ref   bigint   NOT NULL,
    batch_key bigint   NOT NULL,
    step      smallint NOT NULL CHECK (step >= 0),
    columns   text[]   NOT NULL,
    keys      bigint[] NOT NULL,
    before    text[]   NOT NULL,
    after     text[]   NOT NULL,
    PRIMARY KEY (run_ref, batch_key, step),
    CHECK (cardinality(columns) > 0 AND cardinality(before) = cardinality(columns)
           AND cardinality(after) = cardinality(columns))
);
-- Stored uncompressed (out of line): pglz compression of a batch's arrays costs more than its UPDATE
-- saves (bench/backfill_bench.py); about 20 bytes per changed row and recorded column. A server
-- built with lz4 may take SET STORAGE EXTENDED, SET COMPRESSION lz4 instead.
ALTER TABLE hrms.core_backfillundo
    ALTER COLUMN keys SET STORAGE EXTERNAL,
    ALTER COLUMN before SET STORAGE EXTERNAL,
    ALTER COLUMN after SET STORAGE EXTERNAL;
COMMENT ON TABLE hrms.core_backfillundo IS
    'before-images of the rows a backfill run changed, one row per batch and batch.update (step): run_ref -> core_backfillrun.id, batch_key: the last key of the batch, keys: the changed rows, before/after: per column of columns, the array (text form) of its values in the order of keys; holds personal and pay data: stays in the HR database';

-- The same, a row per changed row and column (for people and reports; the undo reads the table).
CREATE VIEW hrms.core_backfillundo_rows AS
SELECT u.run_ref, u.batch_key, u.step, x.row_key, c.column_name, x.before, x.after
FROM hrms.core_backfillundo u
CROSS JOIN LATERAL unnest(u.columns) WITH ORDINALITY AS c (column_name, position)
CROSS JOIN LATERAL unnest(u.keys, u.before[c.position]::text[], u.after[c.position]::text[]) AS x (row_key, before, after);

-- A run's undo mark is final: once set, nothing about the run changes again.
CREATE FUNCTION hrms.core_backfillrun_undo_final() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF OLD.undone_at IS NOT NULL THEN
        RAISE EXCEPTION 'backfill run % of % was undone by run % at %: it cannot change again',
            OLD.run_id, OLD.backfill, OLD.undone_by, OLD.undone_at
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER hrms_guard_backfillrun_undo_final BEFORE UPDATE ON hrms.core_backfillrun
    FOR EACH ROW EXECUTE FUNCTION hrms.core_backfillrun_undo_final();

GRANT SELECT, INSERT ON hrms.core_backfillrun, hrms.core_backfillundo TO hrms_importer;
GRANT UPDATE (undone_at, undone_by, undo_summary) ON hrms.core_backfillrun TO hrms_importer;
GRANT SELECT ON hrms.core_backfillundo_rows TO hrms_importer;
GRANT SELECT ON hrms.core_backfillrun, hrms.core_backfillundo, hrms.core_backfillundo_rows TO hrms_reader;

-- A checkpoint rewound by an undo says so.
ALTER TABLE hrms.core_backfillcheckpoint DROP CONSTRAINT core_backfillcheckpoint_status_check;
ALTER TABLE hrms.core_backfillcheckpoint ADD CONSTRAINT core_backfillcheckpoint_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'undone')) NOT VALID;
