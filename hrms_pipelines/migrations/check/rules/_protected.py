"""The tables whose rows are the record of what happened (who changed what, which migrations ran,
what an undo needs): a migration may add to them, never switch off what guards them."""

from __future__ import annotations

from hrms_pipelines import settings

AUDIT_LOG = "core_auditlog"  # and its partitions, core_auditlog_<...>
PROTECTED = frozenset({
    AUDIT_LOG,
    "migration_ledger",  # hrms_meta: what ran, with its checksum
    "imports_importrecord", "imports_undoinsert", "imports_undoupdate",  # an import's record and change capture
    "core_backfillrun", "core_backfillundo",  # a backfill's record and undo
})
PROJECT_SCHEMAS = (settings.HR_SCHEMA, settings.META_SCHEMA)


def _split(name: str) -> tuple[str | None, str]:
    schema, _, relname = name.rpartition(".")
    return (schema or None), relname


def is_audit_log(name: str) -> bool:
    """The audit log or one of its partitions (`hrms.core_auditlog_y2026m01`, the default one)."""
    schema, relname = _split(name.lower())
    return schema in (None, settings.HR_SCHEMA) and (relname == AUDIT_LOG or relname.startswith(AUDIT_LOG + "_"))


def is_protected(name: str) -> bool:
    schema, relname = _split(name.lower())
    return is_audit_log(name) or (schema in (None, *PROJECT_SCHEMAS) and relname in PROTECTED)
