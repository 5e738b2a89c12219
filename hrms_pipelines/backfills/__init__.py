"""Batched, resumable, undoable data backfills, top-down (each module imports only those above it):

- registry.py: what can be backfilled (Backfill, Plan, Batch, Options and their bounds);
- capture.py: the previous values of every row a run changes; field.py: the generic field backfill;
- throttle.py: what makes batches wait (busy database, replica lag, bystanders);
- engine.py: keyset batches, checkpoint, throttle, progress; restore_sql.py: the SQL of one run's
  undo, column by column; undo.py: putting recorded values back;
- builtin.py: the registered backfills; jobs.py: `data_backfill`, `field_backfill`, `undo_backfill`;
  sensors.py: a killed run's checkpoint marked 'interrupted'.

Importing the package registers the built-in backfills on `registry.registry`."""

from hrms_pipelines.backfills import builtin as _builtin  # noqa: F401  (registers the built-ins)
