"""`check_migrations`: the migration safety analyzer as a Dagster job (CI runs it with
`dagster job execute -m hrms_pipelines -j check_migrations`; the migration files sensor requests it
for new and changed files).

    ops:
      check_migration_files:
        config: {paths: [payroll/0004_x.up.sql], strict: true, app: payroll, json: false, trace: true}

Paths name files or app folders inside the deployment's migrations folder (HRMS_MIGRATIONS_DIR, else
sql/migrations), relative to it: the job never reads SQL from anywhere else.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from hrms_pipelines import settings
from hrms_pipelines.migrations.check import Options, UsageError, analyze_paths
from hrms_pipelines.migrations.check.sizes import SizesError
from hrms_pipelines.migrations.files import MigrationError
from hrms_pipelines.migrations.trace import TraceError
from hrms_pipelines.migrations.trace.check import is_embedded, traced_paths
from hrms_pipelines.migrations.trace.metadata import trace_metadata
from hrms_pipelines.resources import MIGRATOR, READER, HrmsDatabase
from hrms_pipelines.errors import error_boundary


class CheckMigrationsConfig(dg.Config):
    paths: list[str] = []
    """Migration files or app folders inside the migrations folder, relative to it (payroll/0004_x.up.sql,
    payroll); empty: every migration."""
    strict: bool = False
    """Fail on WARNING findings too, not only DANGER."""
    app: str | None = None
    """Only this app's migrations."""
    json_output: bool = Field(default=False, alias="json")
    """`json` in run config: also write the findings to the log and metadata as JSON (the CLI's --json)."""
    standalone: bool = False
    """Judge every file as a script run on its own (no runner transaction or timeouts)."""
    live_sizes: bool = False
    """Read live table sizes and the applied-migration ledger from the HR database."""
    trace: bool = False
    """Also rehearse the pending migrations on a scratch copy of the HR database's schema (on a private
    PostgreSQL, never writing to the HR database) and report each statement's locks, rewrites and duration
    beside the findings. Reads the HR database like live_sizes does."""


def inside_migrations(raw: str) -> Path:
    """`raw` (relative to the migrations folder, or absolute inside it) as a path inside that folder;
    anything else, a symlink on the way included, is a UsageError naming it."""
    root = settings.migrations_dir()
    given = Path(raw)
    if given.is_absolute() and not given.is_relative_to(root):
        raise UsageError(f"path {settings.excerpt(raw)} is outside the migrations folder {root}; "
                         "only migrations of the deployment's folder are checked")
    relative = given.relative_to(root) if given.is_absolute() else given
    if not relative.parts or any(part.startswith(".") for part in relative.parts):
        raise UsageError(f"path {settings.excerpt(raw)} must name a file or app folder inside the migrations folder "
                         f"{root}, relative to it (no '..', no hidden names)")
    walked = root
    for part in relative.parts:
        walked = walked / part
        if walked.is_symlink():
            raise UsageError(f"path {settings.excerpt(raw)}: {walked} is a symbolic link; only real files of the "
                             "migrations folder are checked")
    return walked


def _traced(paths: list[Path], options: Options, hrms_db: HrmsDatabase):
    """The analyzer and a rehearsal against the HR database: its ledger and sizes read as the reader, its
    schema rebuilt on the scratch cluster from the ledger (the embedded server) or by pg_dump as the migrator
    (a deployment's own PostgreSQL, which owns the HR schemas)."""
    dump_url = None if is_embedded(hrms_db) else hrms_db.url(MIGRATOR)
    with hrms_db.connection(READER, autocommit=True) as conn:
        return traced_paths(paths, options=options, conn=conn, dump_url=dump_url,
                            target_display=hrms_db.display_url(MIGRATOR))


@dg.op(description="Run the migration safety analyzer; fail on DANGER findings (WARNING too when strict).")
@error_boundary
def check_migration_files(context: dg.OpExecutionContext, config: CheckMigrationsConfig, hrms_db: HrmsDatabase) -> None:
    options = Options(strict=config.strict, app=config.app, standalone=config.standalone)
    try:
        paths = [inside_migrations(p) for p in config.paths]
        if config.trace:
            report = _traced(paths, options, hrms_db)
        elif config.live_sizes:
            with hrms_db.connection(READER, autocommit=True) as conn:
                report = analyze_paths(paths, options=options, conn=conn)
        else:
            report = analyze_paths(paths, options=options)
    except (UsageError, SizesError, MigrationError, TraceError) as exc:
        raise dg.Failure(f"cannot check migrations: {exc}") from exc
    context.log.info(report.to_text())
    if config.json_output:
        context.log.info(report.to_json())
    counts = report.counts()
    metadata = {
        **counts,
        "strict": config.strict,
        "findings": dg.MetadataValue.md(report.to_markdown()),
        "checked_files": dg.MetadataValue.md("\n".join(f"- `{p}`" for p in report.files) or "none"),
    }
    if config.json_output:
        metadata["findings_json"] = dg.MetadataValue.json([f.as_dict() for f in report.findings])
    if report.trace is not None:
        metadata.update(trace_metadata(report.trace))
    context.add_output_metadata(metadata)
    if report.failing:
        lines = [f"{f.path}:{f.line}:{f.column}: {f.severity.value} {f.rule}: {f.message}" for f in report.failing]
        raise dg.Failure(description=report.summary() + "\n" + "\n".join(lines), metadata=metadata)


@dg.job(description="Migration safety analysis of the migration files (all, or the given paths).",
        tags={"hrms/kind": "migration-check"})
def check_migrations() -> None:
    check_migration_files()
