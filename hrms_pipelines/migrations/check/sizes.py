"""Expected row counts per table: the checked-in reference (`sql/table_sizes.yaml`, the seed's
"Table Size Reference") and, when a database is reachable, its live statistics
(`pg_class.reltuples`, partitions summed into their parent). The larger figure wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hrms_pipelines import settings

DEFAULT_THRESHOLD = 100_000


class SizesError(Exception):
    pass


def reference_path() -> Path:
    return settings.PROJECT_ROOT / "sql" / "table_sizes.yaml"


def load_reference(path: Path | None = None) -> tuple[dict[str, int], int]:
    """(rows per table, large threshold) from the YAML reference; a missing file is empty."""
    path = path or reference_path()
    if not path.is_file():
        return {}, DEFAULT_THRESHOLD
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SizesError(f"{path}: cannot read table sizes: {exc}") from exc
    tables = data.get("tables") or {}
    threshold = data.get("large_threshold", DEFAULT_THRESHOLD)
    if not isinstance(tables, dict) or not isinstance(threshold, int):
        raise SizesError(f"{path}: expected `large_threshold: <int>` and a `tables:` mapping of name -> rows")
    rows = {}
    for name, entry in tables.items():
        value = entry.get("rows") if isinstance(entry, dict) else entry
        if not isinstance(value, int) or value < 0:
            raise SizesError(f"{path}: table {name}: rows must be a non-negative integer, got {value!r}")
        rows[str(name).lower()] = value
    return rows, threshold


LIVE_SIZES_SQL = """
SELECT n.nspname || '.' || c.relname,
       greatest(c.reltuples, 0)::bigint + coalesce((
           SELECT sum(greatest(p.reltuples, 0))::bigint
           FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
           WHERE i.inhparent = c.oid), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
"""


def live_sizes(conn) -> dict[str, int]:
    """Row estimates from the planner's statistics (a table never analyzed counts as 0)."""
    return {name: int(rows) for name, rows in conn.execute(LIVE_SIZES_SQL).fetchall()}


@dataclass
class TableSizes:
    reference: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    threshold: int = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        merged: dict[str, int] = {}
        for source in (self.reference, self.live):
            for name, rows in source.items():
                name = name.lower()
                merged[name] = max(rows, merged.get(name, 0))
        # An unqualified name in a migration matches the table of that name in any schema.
        bare: dict[str, int] = {}
        for name, rows in merged.items():
            short = name.rsplit(".", 1)[-1]
            bare[short] = max(rows, bare.get(short, 0))
        self._merged = merged
        self._bare = bare

    def rows(self, table: str) -> int | None:
        table = table.lower()
        if "." in table:
            return self._merged.get(table)
        return self._bare.get(table)

    def is_large(self, table: str) -> bool:
        rows = self.rows(table)
        return (rows or 0) >= self.threshold

    @classmethod
    def load(cls, *, reference: Path | None = None, conn=None, threshold: int | None = None) -> TableSizes:
        rows, default_threshold = load_reference(reference)
        return cls(reference=rows, live=live_sizes(conn) if conn is not None else {},
                   threshold=threshold if threshold is not None else default_threshold)
