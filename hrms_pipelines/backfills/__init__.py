"""Batched, resumable data backfills: registry, engine, the generic field backfill, and the
`data_backfill` / `field_backfill` jobs. Importing the package registers the built-in backfills."""

from hrms_pipelines.backfills import builtin as _builtin  # noqa: F401  (registers the built-ins)
from hrms_pipelines.backfills.registry import BackfillRegistry, Batch, Options, registry

__all__ = ["BackfillRegistry", "Batch", "Options", "registry"]
