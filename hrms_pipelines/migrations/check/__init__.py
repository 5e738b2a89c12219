"""The migration safety analyzer: `scripts/migration/check-migration-safety.py` of the seed,
rebuilt for the plain SQL migrations under `sql/migrations/` on PostgreSQL's own parser (pglast).

    python -m hrms_pipelines.migrations.check [--strict] [--app X] [--json] [paths...]
"""

from hrms_pipelines.migrations.check.analyzer import (
    Options,
    Report,
    UsageError,
    analyze_migrations,
    analyze_paths,
    analyze_sql,
    mode_of,
)
from hrms_pipelines.migrations.check.model import Finding, Severity
from hrms_pipelines.migrations.check.rules import ALL as RULES
from hrms_pipelines.migrations.check.sizes import TableSizes

__all__ = [
    "Finding", "Options", "RULES", "Report", "Severity", "TableSizes", "UsageError", "analyze_migrations",
    "analyze_paths", "analyze_sql", "mode_of",
]
