"""Batched, resumable, undoable data backfills: registry.py (what can be backfilled), engine.py
(keyset batches, checkpoint, throttle, progress), capture.py (the previous values of every row a run
changes), undo.py (putting them back), field.py (the generic field backfill), builtin.py (the
registered backfills), jobs.py (`data_backfill`, `field_backfill`, `undo_backfill`).

Importing the package registers the built-in backfills on `registry.registry`."""

from hrms_pipelines.backfills import builtin as _builtin  # noqa: F401  (registers the built-ins)
