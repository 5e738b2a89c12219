"""A rehearsal: the target's schema on a scratch database, every pending migration run there by the
runner as the migrator (same transaction mode, same timeouts, the same code), each statement
watched; then the scratch database is dropped, also when a migration fails."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from hrms_pipelines import roles
from hrms_pipelines.migrations import runner
from hrms_pipelines.migrations.files import Migration, MigrationError
from hrms_pipelines.migrations.trace import cluster as clusters
from hrms_pipelines.migrations.trace import schema
from hrms_pipelines.migrations.trace.model import TraceResult
from hrms_pipelines.migrations.trace.observe import TraceObserver


def rehearse(
    migrations: list[Migration],
    target: schema.Target,
    *,
    selected: set[tuple[str, str]] | None = None,
    app: str | None = None,
    timeouts: runner.Timeouts | None = None,
    display: Callable[[Path], str] = str,
    scratch: clusters.ScratchCluster | None = None,
    log=lambda *_: None,
) -> TraceResult:
    """Rehearse the pending migrations (those `selected`, when given, and what they need) of
    `migrations` (every migration, in order) against `target`. Never connects to the target."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock
        clock = now

    scratch = scratch or clusters.cluster()
    phase("start the scratch cluster")
    notes: list[str] = []
    upto = migrations
    if selected is not None:
        last = max((i for i, m in enumerate(migrations) if m.key in selected), default=-1)
        upto = migrations[:last + 1]
    if target.dump_url:
        template = schema.from_dump(scratch, target, notes)
        source = f"pg_dump --schema-only of {target.display}"
    elif target.ledger is not None:
        template = schema.from_ledger(scratch, migrations, set(target.ledger), log)
        source = f"the {len(target.ledger)} migration(s) of the target's ledger, replayed"
    else:
        first = min((i for i, m in enumerate(upto) if selected is None or m.key in selected), default=len(upto))
        template = schema.from_ledger(scratch, migrations, {m.key for m in upto[:first]}, log)
        source = (f"the {first} migration(s) before the traced ones, replayed (no database: each earlier "
                  "migration counts as applied)")
    phase("build the target's schema (cached as a template)")
    database = scratch.create(template=template)
    phase("create the scratch database")
    result = TraceResult(source=source, scratch_database=database, notes=notes)
    try:
        if target.dump_url and target.ledger:
            schema.copy_ledger(scratch, database, target.ledger)
        stats = target.relation_stats or schema.reference_stats(target.sizes)
        scratch.carry_sizes(database, stats)
        phase("carry the table sizes over")
        with scratch.admin(database) as probe, \
                psycopg.connect(scratch.url(database, roles.MIGRATOR.role)) as conn:
            observer = TraceObserver(probe, traced=selected, per_file_baseline=target.ledger is None, display=display)
            try:
                runner.apply(conn, upto, app=app, timeouts=timeouts, log=log, observer=observer,
                             run_id="trace")
            except (MigrationError, psycopg.Error) as exc:
                result.failure = str(exc)
            result.statements = observer.statements
            result.migrations = observer.migrations
        phase("run the migrations")
        if result.failure:
            done = set(result.migrations[:-1])
            result.not_reached = [m.label for m in upto if m.label not in done and m.label not in result.migrations
                                  and (selected is None or m.key in selected)]
    finally:
        scratch.drop(database)
        result.scratch_dropped = not scratch.exists(database)
        phase("drop the scratch database")
    result.seconds = seconds
    return result
