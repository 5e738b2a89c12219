"""What people read after an import: the seed's post-import counts and the stage report as metadata."""

from __future__ import annotations

import dagster as dg
import psycopg

from hrms_pipelines.imports.stage import StageResult
from hrms_pipelines.metadata import markdown_table

DATABASE_COUNTS = {
    "users": "SELECT count(*) FROM hrms.employees_employee WHERE NOT is_placeholder",
    "teams": "SELECT count(*) FROM hrms.org_team",
    "tribes": "SELECT count(*) FROM hrms.org_tribe",
    "chapters": "SELECT count(*) FROM hrms.org_chapter",
    "timeline_events": "SELECT count(*) FROM hrms.history_timelineevent",
}


def database_counts(conn: psycopg.Connection) -> dict[str, int]:
    """The counts the seed's post-import validation prints (Users, Teams, Tribes, Chapters, Timeline Events)."""
    return {name: conn.execute(query).fetchone()[0] for name, query in DATABASE_COUNTS.items()}


def stage_metadata(result: StageResult, counts: dict[str, int] | None = None) -> dict:
    totals = result.counts
    outcome = "unchanged" if result.unchanged else ("dry_run" if result.dry_run else "succeeded")
    metadata: dict = {
        "outcome": outcome,
        **{key: dg.MetadataValue.int(value) for key, value in totals.items()},
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "rows_per_second": dg.MetadataValue.float(round(result.rows_per_second, 1)),
        "files": dg.MetadataValue.md(markdown_table(
            ["file", "type", "outcome", "import record", "rows", "inserted", "updated", "unchanged", "skipped", "sha256"],
            [[f.name, f.kind or result.stage, f.outcome, f.record_id or "", f.counts["rows_read"], f.counts["inserted"],
              f.counts["updated"], f.counts["unchanged"], f.counts["skipped"], f.sha256[:12]] for f in result.files])),
    }
    if result.entities:
        metadata["entities"] = dg.MetadataValue.md(markdown_table(
            ["entity", "inserted", "updated", "unchanged", "skipped", "other"],
            [[name, c.get("inserted", ""), c.get("updated", ""), c.get("unchanged", ""), c.get("skipped", ""),
              ", ".join(f"{k}: {v}" for k, v in c.items() if k not in ("inserted", "updated", "unchanged", "skipped"))]
             for name, c in result.entities.items()]))
    if result.validations:
        metadata["validations"] = dg.MetadataValue.md(markdown_table(
            ["validation", "blocking", "offending rows"],
            [[v.name, "yes" if v.blocking else "no", v.count] for v in result.validations]))
    if counts:
        metadata["summary"] = dg.MetadataValue.md(markdown_table(["", "count"], [[k, v] for k, v in counts.items()]))
        metadata.update({f"count_{k}": dg.MetadataValue.int(v) for k, v in counts.items()})
    return metadata


def rejects_metadata(report) -> dict:
    if report is None or not report.count:
        return {}
    metadata = {
        "rejected": dg.MetadataValue.int(report.count),
        "first_rejects": dg.MetadataValue.md(markdown_table(
            ["file", "row", "column", "value", "rule"], [r.as_row() for r in report.first])),
    }
    if report.path is not None and report.path.exists():
        metadata["reject_file"] = dg.MetadataValue.path(str(report.path))
    return metadata
