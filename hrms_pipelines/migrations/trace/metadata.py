"""The trace as Dagster metadata: the per-statement lock table as a table the UI renders, and the
same as markdown (imported by the jobs only: the CLI never loads Dagster)."""

from __future__ import annotations

import dagster as dg

from hrms_pipelines.migrations.trace.model import TraceResult

COLUMNS = [("statement", "string"), ("sql", "string"), ("transaction", "string"), ("locks", "string"),
           ("blocks", "string"), ("work", "string"), ("ms", "float"), ("error", "string")]


def trace_metadata(result: TraceResult) -> dict:
    records = [dg.TableRecord(dict(zip([name for name, _ in COLUMNS], row[:6] + [float(row[6]), row[7]], strict=True)))
               for row in result.rows()]
    return {
        "trace_statements": dg.MetadataValue.table(
            records, dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in COLUMNS])),
        "trace": dg.MetadataValue.md(result.to_markdown()),
        "trace_seconds": round(result.total_seconds, 3),
        "trace_scratch_dropped": result.scratch_dropped,
    }
