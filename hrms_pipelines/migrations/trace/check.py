"""Trace mode in front of the analyzer's report: what the CLI's --trace, check_migrations' `trace:
true` and apply_migrations' dry run call."""

from __future__ import annotations

import os
from pathlib import Path

from hrms_pipelines import settings
from hrms_pipelines.migrations import files, runner
from hrms_pipelines.migrations.check.analyzer import Options, Report, analyze_paths, display_path
from hrms_pipelines.migrations.check.sizes import TableSizes
from hrms_pipelines.migrations.trace import schema
from hrms_pipelines.migrations.trace.compare import merge
from hrms_pipelines.migrations.trace.model import TraceResult
from hrms_pipelines.migrations.trace.rehearse import rehearse


def is_embedded(hrms_db) -> bool:
    """The HR database is the embedded server this project starts (so its schema is exactly what its
    ledger's migrations made); else it is a user's database, read with pg_dump."""
    from hrms_pipelines.roles import MIGRATOR

    location = hrms_db._location() if hasattr(hrms_db, "_location") else None
    return location is None and not os.environ.get(settings.DATABASE_URL_ENV) and not os.environ.get(MIGRATOR.url_env)


def target_of(conn, *, sizes: TableSizes, dump_url: str | None, display: str = "") -> schema.Target:
    """What the trace needs from the target, read through `conn`; `dump_url`: pg_dump the schema from
    there (None: replay the ledger's migrations)."""
    return schema.read_target(conn, sizes=sizes, dump_url=dump_url, display=display)


def offline_target(sizes: TableSizes) -> schema.Target:
    """No database (CI): every migration before the traced ones counts as applied; sizes from the reference."""
    return schema.Target(ledger=None, sizes=sizes, relation_stats=schema.reference_stats(sizes))


def trace_into(report: Report, migrations: list[files.Migration], target: schema.Target, *,
               selected: set[tuple[str, str]], timeouts: runner.Timeouts | None = None, log=lambda *_: None) -> TraceResult:
    """Rehearse the pending ones of `selected` and judge `report` by what the trace saw."""
    pending = selected - set(target.ledger or ())
    if not pending:
        result = TraceResult(source="nothing to rehearse: every selected migration is applied already",
                             scratch_dropped=True)
    else:
        result = rehearse(migrations, target, selected=pending, timeouts=timeouts, display=display_path, log=log)
        if already := sorted(f"{a}/{v}" for a, v in selected - pending):
            result.notes.append(f"applied already, not rehearsed: {', '.join(already)}")
    by_path = {display_path(m.up.path): m.up.path for m in migrations}
    traced = {display_path(m.up.path) for m in migrations if m.key in pending}
    merge(report, result, sizes=target.sizes, files_by_path=by_path, traced_files=traced)
    report.trace = result
    return result


def traced_paths(paths: list[str | Path] | None, *, migrations_dir: Path | None = None, options: Options | None = None,
                 conn=None, dump_url: str | None = None, target_display: str = "",
                 timeouts: runner.Timeouts | None = None) -> Report:
    """analyze_paths, then trace the selected migrations: against the database behind `conn` (its
    schema by pg_dump from `dump_url`, or by replaying its ledger when `dump_url` is None), or, with
    no `conn`, on the migrations before them replayed."""
    options = options or Options()
    migrations_dir = (migrations_dir or settings.migrations_dir()).resolve()
    report = analyze_paths(paths, migrations_dir=migrations_dir, options=options, conn=conn)
    sizes = TableSizes.load(reference=options.sizes_file, conn=conn, threshold=options.threshold)
    migrations = files.discover(migrations_dir)
    checked = set(report.files)
    selected = {m.key for m in migrations if display_path(m.up.path) in checked}
    if conn is not None:
        target = target_of(conn, sizes=sizes, dump_url=dump_url, display=target_display)
    else:
        target = offline_target(sizes)
    trace_into(report, migrations, target, selected=selected, timeouts=timeouts)
    return report
