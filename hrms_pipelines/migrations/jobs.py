"""`apply_migrations` and `revert_migrations`: the migration runner as Dagster jobs.

apply_migrations:  plan_migrations -> check_migration_safety -> apply_planned_migrations -> verify_migrations
revert_migrations: revert_to_target -> verify_after_revert

All settings of a run go to the first op, e.g.

    ops:
      plan_migrations:
        config: {dry_run: true, app: employees, lock_timeout: 10s, statement_timeout: 30s}
"""


from dataclasses import dataclass, field

import dagster as dg

from hrms_pipelines.retries import transient_retries
from hrms_pipelines import locks, settings
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.migrations import bounds, consent, files, gate, runner
from hrms_pipelines.migrations.trace import TraceError
from hrms_pipelines.resources import MIGRATOR, HrmsDatabase
from hrms_pipelines.errors import error_boundary



class ApplyMigrationsConfig(dg.Config):
    dry_run: bool = False
    """Print the plan and change nothing: the pending migrations are rehearsed on a scratch copy of the
    database's schema (trace mode) and each statement's locks, rewrites and duration reported."""
    app: str | None = None
    """Only this app's pending migrations (and the ones of other apps they depend on)."""
    lock_timeout: str = runner.DEFAULT_LOCK_TIMEOUT
    """How long a statement may wait for a lock before it fails (e.g. 10s; more than 0, at most 10min)."""
    statement_timeout: str = runner.DEFAULT_STATEMENT_TIMEOUT
    """How long a single statement may run (raise it for a known long migration; at most 12h)."""
    runner_wait: str = runner.DEFAULT_RUNNER_WAIT
    """How long to wait for another migration run to finish before failing (0 to 1h)."""
    strict: bool = False
    """Refuse pending migrations with WARNING findings too, not only DANGER."""


@dataclass
class MigrationPlan:
    settings: dict
    pending: list[str] = field(default_factory=list)


def _migrations() -> list[files.Migration]:
    """The deployment's migrations folder (HRMS_MIGRATIONS_DIR, else sql/migrations): never run config,
    since whoever chose the folder would choose the SQL the migrator runs."""
    return files.discover(settings.migrations_dir())


def _check_knobs(lock_timeout: str, statement_timeout: str, runner_wait: str) -> None:
    """Refuse, before anything runs, a timeout or wait past its bound (migrations.bounds), naming the limit."""
    try:
        runner.Timeouts(lock_timeout, statement_timeout)
        bounds.RUNNER_WAIT.check(runner_wait)
    except bounds.KnobError as exc:
        raise dg.Failure(str(exc)) from exc


def _by_label(migrations: list[files.Migration], labels: list[str]) -> list[files.Migration]:
    wanted = set(labels)
    return [m for m in migrations if m.label in wanted]


@dg.op(description="List the pending migrations in dependency order; refuse when an applied file changed.")
@error_boundary
def plan_migrations(context: dg.OpExecutionContext, config: ApplyMigrationsConfig, hrms_db: HrmsDatabase) -> MigrationPlan:
    _check_knobs(config.lock_timeout, config.statement_timeout, config.runner_wait)
    migrations = _migrations()
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        ledger = runner.read_ledger(conn)
    try:
        pending = runner.plan(migrations, ledger, app=config.app)
    except files.MigrationError as exc:
        raise dg.Failure(str(exc)) from exc
    rows = [[m.label, "yes" if m.transactional else "no (CONCURRENTLY)", "yes" if m.reversible else "NO"] for m in pending]
    table = markdown_table(["migration", "transactional", "reversible"], rows) if rows else "nothing pending"
    context.log.info(f"database {hrms_db.display_url(MIGRATOR)}; {len(pending)} pending migration(s)\n{table}")
    context.add_output_metadata({"pending": len(pending), "plan": dg.MetadataValue.md(table), "dry_run": config.dry_run})
    return MigrationPlan(settings=config.model_dump(), pending=[m.label for m in pending])


@dg.op(description="Run the migration safety analyzer over the pending files (and, in a dry run, rehearse them on a "
                   "scratch copy of the schema); refuse failing findings.")
@error_boundary
def check_migration_safety(context: dg.OpExecutionContext, plan: MigrationPlan, hrms_db: HrmsDatabase) -> MigrationPlan:
    migrations = _migrations()
    dry_run = plan.settings["dry_run"]
    timeouts = runner.Timeouts(plan.settings["lock_timeout"], plan.settings["statement_timeout"])
    try:
        verdict = gate.check_pending(migrations, _by_label(migrations, plan.pending), strict=plan.settings["strict"],
                                     database=hrms_db, log=context.log, trace=dry_run, timeouts=timeouts)
    except (files.MigrationError, TraceError) as exc:
        raise dg.Failure(f"the dry run could not rehearse the pending migrations: {exc}") from exc
    context.add_output_metadata(verdict.metadata())
    if verdict.refused:
        message = verdict.refusal_message()
        if plan.settings["dry_run"]:
            context.log.warning(f"dry run: a real run would refuse:\n{message}")
        else:
            raise dg.Failure(message, metadata=verdict.metadata())
    return plan


@dg.op(description="Apply the plan, each migration under lock and statement timeouts.", pool=settings.WRITER_POOL)
@transient_retries
def apply_planned_migrations(context: dg.OpExecutionContext, plan: MigrationPlan, hrms_db: HrmsDatabase) -> MigrationPlan:
    if plan.settings["dry_run"]:
        context.log.info("dry run: nothing applied")
        context.add_output_metadata({"applied": 0, "dry_run": True})
        return plan
    migrations = _migrations()
    timeouts = runner.Timeouts(plan.settings["lock_timeout"], plan.settings["statement_timeout"])
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        try:
            applied = runner.apply(
                conn, migrations, app=plan.settings["app"], timeouts=timeouts, run_id=context.run_id,
                runner_wait=plan.settings["runner_wait"], log=context.log.info,
            )
        except (files.MigrationError, locks.LockNotAvailable) as exc:
            raise dg.Failure(f"migration failed:\n{exc}") from exc
    rows = [[a.migration.label, a.duration_ms] for a in applied]
    context.add_output_metadata({
        "applied": len(applied),
        "migrations": dg.MetadataValue.md(markdown_table(["migration", "ms"], rows) if rows else "nothing pending"),
        "duration_ms": sum(a.duration_ms for a in applied),
    })
    return plan


@dg.op(description="Verify: nothing pending, checksums match, tables present, no INVALID index, FKs validated.")
@error_boundary
def verify_migrations(context: dg.OpExecutionContext, plan: MigrationPlan, hrms_db: HrmsDatabase) -> None:
    if plan.settings["dry_run"]:
        return
    migrations = _migrations()
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        report = runner.verify(conn, migrations, app=plan.settings["app"])
        ledger = runner.read_ledger(conn)
    context.log.info(f"ledger holds {len(ledger)} migration(s)")
    if not report.ok:
        raise dg.Failure("verification failed:\n" + "\n".join(report.problems()))
    context.log.info("verified: nothing pending, checksums match, tables present, indexes valid, foreign keys validated")


@dg.job(
    description="Apply pending SQL migrations: plan, safety analysis, apply under lock/statement timeouts, verify.",
    tags={"hrms/kind": "migration"},
)
def apply_migrations() -> None:
    verify_migrations(apply_planned_migrations(check_migration_safety(plan_migrations())))


class RevertMigrationsConfig(dg.Config):
    app: str | None = None
    """The app to revert; leave empty with target 'zero' to revert every app."""
    target: str
    """The version to go back to ("0003"), or "zero" to revert all of the app's migrations."""
    dry_run: bool = False
    lock_timeout: str = runner.DEFAULT_LOCK_TIMEOUT
    statement_timeout: str = runner.DEFAULT_STATEMENT_TIMEOUT
    runner_wait: str = runner.DEFAULT_RUNNER_WAIT


@dg.op(description="Revert applied migrations newer than the target, newest first, with their down files.", pool=settings.WRITER_POOL)
@transient_retries
def revert_to_target(context: dg.OpExecutionContext, config: RevertMigrationsConfig, hrms_db: HrmsDatabase) -> str:
    _check_knobs(config.lock_timeout, config.statement_timeout, config.runner_wait)
    migrations = _migrations()
    timeouts = runner.Timeouts(config.lock_timeout, config.statement_timeout)
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        try:
            # the deployment's consent (consent.py), checked and acted on under the runner's lock, so
            # the plan it judged is the plan the runner reverts
            with locks.session_lock(conn, locks.MIGRATIONS, wait=config.runner_wait):
                plan = runner.revert_plan(migrations, runner.read_ledger(conn), app=config.app, target=config.target)
                consented = consent.check(conn, plan, target=config.target)
                if config.dry_run:
                    doomed = plan
                else:
                    if backup_id := consent.protect(conn, consented, run_id=context.run_id):
                        context.log.info(f"backed up the tables the revert empties: backup {backup_id} "
                                         f"(under {consent.REVERTS_FOLDER}/ of the backup folder)")
                        context.add_output_metadata({"revert_backup_id": backup_id})
                    doomed = runner.revert(
                        conn, migrations, app=config.app, target=config.target, timeouts=timeouts,
                        runner_wait=config.runner_wait, log=context.log.info,
                    )
        except (files.MigrationError, locks.LockNotAvailable) as exc:
            raise dg.Failure(str(exc)) from exc
    table = markdown_table(["migration"], [[m.label] for m in doomed]) if doomed else "nothing to revert"
    context.log.info(("dry run, would revert:\n" if config.dry_run else "reverted:\n") + table)
    context.add_output_metadata({"reverted": 0 if config.dry_run else len(doomed), "plan": dg.MetadataValue.md(table)})
    return config.target


@dg.op(description="System checks after a revert: no INVALID index, every foreign key validated, files unchanged.")
@error_boundary
def verify_after_revert(context: dg.OpExecutionContext, target: str, hrms_db: HrmsDatabase) -> None:
    with hrms_db.connection(MIGRATOR, autocommit=True) as conn:
        report = runner.verify(conn, _migrations())
    report.pending = []  # a revert leaves migrations pending on purpose
    if not report.ok:
        raise dg.Failure("verification failed:\n" + "\n".join(report.problems()))


@dg.job(description="Revert an app's migrations to a target version with their down files. A down file that "
        "drops rows or touches the audit log needs the deployment's consent (HRMS_REVERT_ALLOW); target 'zero' "
        "needs HRMS_ENV=development.", tags={"hrms/kind": "migration"})
def revert_migrations() -> None:
    verify_after_revert(revert_to_target())
