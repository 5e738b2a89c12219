"""What people read after an import: the seed's post-import counts and the stage report as metadata."""

from __future__ import annotations

import dagster as dg
import psycopg

from hrms_pipelines.imports import appends, preview
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


# The tables behind the seed's counts, for the post-import summary of a run: what the run changed
# (its change capture) beside the table's size as PostgreSQL estimates it -- never a count(*), whose
# cost grows with the table however small the change.
SUMMARY_TABLES = {"users": "employees_employee", "teams": "org_team", "tribes": "org_tribe", "chapters": "org_chapter",
                  "timeline_events": "history_timelineevent"}


def table_estimates(conn: psycopg.Connection) -> dict[str, int | None]:
    """name -> rows of its table as the planner estimates them (pg_class.reltuples scaled to the
    table's current pages), None when the table was never vacuumed or analyzed."""
    rows = dict(conn.execute(
        "SELECT c.relname, CASE WHEN c.reltuples < 0 THEN NULL WHEN c.relpages = 0 THEN c.reltuples::bigint "
        "ELSE round(c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int))::bigint END "
        "FROM pg_class c WHERE c.oid = ANY(%s::regclass[])", [[f"hrms.{t}" for t in SUMMARY_TABLES.values()]]).fetchall())
    return {name: rows.get(table) for name, table in SUMMARY_TABLES.items()}


def run_summary(result: StageResult, estimates: dict[str, int | None]) -> dict:
    """Metadata: per table, the rows this run inserted and updated, and the table's estimated size."""
    captured = result.captured
    rows, metadata = [], {}
    for name, table in SUMMARY_TABLES.items():
        inserted = captured.inserted.get(table, 0) if captured else 0
        updated = captured.updated.get(table, 0) if captured else 0
        estimate = estimates.get(name)
        rows.append([name, inserted, updated, f"~{estimate:,}" if estimate is not None else "not analyzed yet"])
        metadata[f"changed_{name}"] = dg.MetadataValue.int(inserted + updated)
        if estimate is not None:
            metadata[f"estimated_{name}"] = dg.MetadataValue.int(estimate)
    metadata["summary"] = dg.MetadataValue.md(
        markdown_table(["", "inserted by this run", "updated by this run", "rows stored (estimate, pg_class)"], rows)
        + "\n\nusers: the estimate includes placeholder users")
    return metadata


def stage_metadata(result: StageResult, counts: dict[str, int | None] | None = None) -> dict:
    """The stage report; with `counts` (table_estimates) also the post-import summary."""
    totals = result.counts
    outcome = "unchanged" if result.unchanged else ("dry_run" if result.dry_run else "succeeded")
    metadata: dict = {
        "outcome": outcome,
        **{key: dg.MetadataValue.int(value) for key, value in totals.items()},
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "rows_per_second": dg.MetadataValue.float(round(result.rows_per_second, 1)),
        "files": dg.MetadataValue.md(markdown_table(
            ["file", "type", "outcome", "path", "import record", "rows", "inserted", "updated", "unchanged", "skipped", "sha256"],
            [[f.name, f.kind or result.stage, f.outcome, f.path, f.record_id or "", f.counts["rows_read"], f.counts["inserted"],
              f.counts["updated"], f.counts["unchanged"], f.counts["skipped"], f.sha256[:12]] for f in result.files])),
    }
    paths = [appends.describe(f) for f in result.files if f.path == "appended"]
    known = [f for f in result.files if f.known_lines]
    if known:
        metadata["known_lines"] = dg.MetadataValue.int(sum(f.known_lines for f in known))
    if paths:
        metadata["path"] = dg.MetadataValue.text("; ".join(paths))
    elif known:
        metadata["path"] = dg.MetadataValue.text("; ".join(
            f"{f.name}: known lines: {f.known_lines:,} of {f.counts['rows_read']:,} lines recognised by their hash and skipped "
            f"(counted unchanged); the other {f.counts['rows_read'] - f.known_lines:,} read, validated and merged" for f in known))
    elif any(f.outcome not in ("unchanged",) for f in result.files):
        metadata["path"] = dg.MetadataValue.text("full: every row of the file read, validated and merged")
    for phase, seconds in result.phases.items():
        metadata[f"seconds_{phase}"] = dg.MetadataValue.float(round(seconds, 3))
    if result.captured is not None:
        c = result.captured
        metadata["undo_bytes"] = dg.MetadataValue.int(c.undo_bytes)
        if c.changed_bytes is not None:
            metadata["changed_rows_bytes"] = dg.MetadataValue.int(c.changed_bytes)
        metadata["change_capture"] = dg.MetadataValue.md(markdown_table(
            ["table", "rows inserted (ids kept)", "rows updated (before-images kept)"],
            [[t, c.inserted.get(t, 0), c.updated.get(t, 0)] for t in sorted(set(c.inserted) | set(c.updated))])
            + f"\n\nkept for undo: {c.undo_bytes:,} bytes in hrms.imports_undoinsert / imports_undoupdate")
    if result.entities:
        metadata["entities"] = dg.MetadataValue.md(markdown_table(
            ["entity", "inserted", "updated", "unchanged", "skipped", "other"],
            [[name, c.get("inserted", ""), c.get("updated", ""), c.get("unchanged", ""), c.get("skipped", ""),
              ", ".join(f"{k}: {v}" for k, v in c.items() if k not in ("inserted", "updated", "unchanged", "skipped"))]
             for name, c in result.entities.items()]))
    if result.validations:
        scope = result.validations[0].scope
        metadata["validations"] = dg.MetadataValue.md(markdown_table(
            ["validation", "blocking", "offending rows"],
            [[v.name, "yes" if v.blocking else "no", v.count] for v in result.validations]) + f"\n\nscope: {scope}")
        metadata[VALIDATION_RESULTS] = dg.MetadataValue.json({
            v.name: {"count": v.count, "headers": list(v.headers), "rows": [[_plain(x) for x in r] for r in v.rows],
                     "scope": v.scope} for v in result.validations})
    if result.warnings:
        metadata["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in result.warnings))
        metadata["warning_count"] = dg.MetadataValue.int(len(result.warnings))
    if result.dry_run and (result.preview or not result.message):
        metadata["preview"] = dg.MetadataValue.md(preview.markdown(result.preview))
    if counts is not None:
        metadata.update(run_summary(result, counts))
    return metadata


VALIDATION_RESULTS = "validation_results"


def _plain(value):
    """A cell as JSON can hold it (dates, decimals as their text)."""
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


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
