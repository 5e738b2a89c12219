"""The import as software-defined assets, in one chain:

    backup_ladders -> import_ladders -> backup_org -> import_org -> backup_users -> import_users
                   -> backup_history -> import_history

An import asset runs its stage as one transaction as the import role (hrms_pipelines.imports.stage);
that transaction also records exactly what the stage changes, for undo (hrms_pipelines.imports.changes,
the undo_import job). A backup asset takes a full backup of the tables its stage writes
(hrms_pipelines.backups) only when the run asks for it (`full_backup`); otherwise it materializes at
once, saying that change capture happens in the stage's transaction: a nightly run keeps what it
changed, not copies of whole tables.

Dry run: the first asset of the run that executes runs every selected stage in ONE transaction and
rolls it back, reports what each stage would have inserted, updated, left unchanged, skipped and
rejected (logs and asset observations), and yields no output. Every later asset of the run is then
skipped: no backup is written and no materialization is recorded.
"""


import dagster as dg

from hrms_pipelines.retries import transient_retries
from hrms_pipelines import backups, locks, settings
from hrms_pipelines.imports import history, ladders, org, preview, records, schemas, summaries, users
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.imports.reader import ImportFileError, inspect_file
from hrms_pipelines.imports.stage import Stage, StageFailed, StageLog, dry_run, run
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import READER, HrmsDatabase

GROUP = "hrms_import"
OWNERS = ["team:hr-data"]
STAGES: tuple[Stage, ...] = (ladders.STAGE, org.STAGE, users.STAGE, history.STAGE)
DESCRIPTIONS = {
    "ladders": "Career ladders, their aspects and levels (pay bands) from the ladders file.",
    "org": "Organizations, departments, tribes, chapters and teams from the organisation files.",
    "users": "Employees with their team, chapter, manager, ladder and level from the users file.",
    "history": "Timeline events with compensation and seniority snapshots from the history file.",
}


def import_key(stage: Stage) -> dg.AssetKey:
    return dg.AssetKey(f"import_{stage.name}")


def backup_key(stage: Stage) -> dg.AssetKey:
    return dg.AssetKey(f"backup_{stage.name}")


def checked(options: ImportOptions) -> ImportOptions:
    """The run's options once every file they name is a plain name and, where it exists, a regular
    file (not a symlink, FIFO or device): the first step of a run refuses a bad one before any stage
    writes. A missing file is left to its stage, which says so."""
    try:
        for name in options.names():
            try:
                settings.open_regular_file(options.directory(), name, "import file").close()
            except FileNotFoundError:
                pass
    except (settings.UnsafeName, PermissionError) as exc:
        raise dg.Failure(str(exc)) from None
    return options


def _log(context, options: ImportOptions, stage: str) -> StageLog:
    try:
        return StageLog(context.log, options.log_file, stage)
    except (settings.UnsafeName, OSError) as exc:  # a planted symlink or FIFO, a full disk ...
        raise dg.Failure(f"the log file cannot be opened: {exc}") from None


def _selected_stages(context, from_stage: Stage) -> list[Stage]:
    selection = context.run.asset_selection
    start = STAGES.index(from_stage)
    return [s for s in STAGES[start:] if not selection or import_key(s) in selection]


def rehearse_stages(context, hrms_db: HrmsDatabase, options: ImportOptions, from_stage: Stage) -> None:
    """The dry run: every selected stage from `from_stage` on in one transaction, rolled back; the
    report goes to the log and to asset observations. Used by the assets and by hrms_import_dry_run."""
    stages = _selected_stages(context, from_stage)
    context.log.info(f"dry run of {', '.join(s.name for s in stages)}: one transaction, rolled back at the end; "
                     "no backup, no materialization")
    try:
        results = dry_run(hrms_db, stages, options, run_id=context.run.run_id, log_for=lambda name: _log(context, options, name))
    except locks.LockNotAvailable as exc:
        context.log.error(str(exc))
        raise dg.Failure(description=str(exc)) from None
    rows = []
    for result in results:
        c = result.counts
        rows.append([result.stage, "fails" if result.message else ("unchanged" if result.unchanged else "ok"), c["rows_read"],
                     c["inserted"], c["updated"], c["unchanged"], c["skipped"], result.rejects.count if result.rejects else 0])
        metadata = {"dry_run": True, **summaries.stage_metadata(result), **summaries.rejects_metadata(result.rejects)}
        if result.message:
            metadata["failure"] = dg.MetadataValue.text(result.message)
        context.log_event(dg.AssetObservation(asset_key=import_key(next(s for s in STAGES if s.name == result.stage)),
                                              metadata=metadata))
    context.log.info("dry run report (nothing was written):\n" + markdown_table(
        ["stage", "outcome", "rows", "would insert", "would update", "unchanged", "skipped", "rejected"], rows))
    for result in results:
        if result.preview:
            context.log.info(f"dry run preview of the {result.stage} stage (sensitive values masked):\n\n"
                             + preview.markdown(result.preview))
    failed = [r for r in results if r.message]
    if failed:
        # A dry run that would fail fails too (CI runs it to catch a bad file), after reporting every stage.
        raise dg.Failure(f"dry run: the import would fail at the {failed[0].stage} stage (nothing was written):\n"
                         f"{failed[0].message}")


def _all_unchanged(hrms_db: HrmsDatabase, stage: Stage, options: ImportOptions) -> list[int] | None:
    """Import record ids when every file of the stage was already imported as it is now; None when
    one changed or cannot be read (the import asset then fails on it and records why)."""
    try:
        infos = [inspect_file(p) for p in stage.files(options)]
    except ImportFileError:
        return None
    if not infos:
        return []
    with hrms_db.connection(READER) as conn:
        found = [records.previous_success(conn, stage.name, info, stage.record_options(options)) for info in infos]
    return found if all(found) else None


def make_backup_asset(stage: Stage, upstream: dg.AssetKey | None):
    @dg.asset(
        name=backup_key(stage).path[-1],
        deps=[upstream] if upstream else [],
        group_name=GROUP,
        kinds={"postgres", "csv"},
        owners=OWNERS,
        pool=settings.WRITER_POOL,
        output_required=False,
        description=f"Full backup (COPY, gzip, manifest with sha256) of the tables the {stage.name} stage writes "
                    f"({', '.join(stage.tables)}), taken only when the run asks for it (full_backup: [{stage.name}]); "
                    "otherwise the stage's own transaction records exactly what it changes, for undo_import.",
    )
    @transient_retries
    def backup_asset(context: dg.AssetExecutionContext, hrms_db: HrmsDatabase, hrms_import_options: ImportOptions):
        options = checked(hrms_import_options)
        if options.dry_run:
            rehearse_stages(context, hrms_db, options, stage)
            return
        if not options.wants_full_backup(stage.name):
            asked = stage.name in options.full_backup or "all" in options.full_backup
            why = "backup: false" if asked else f"no full backup asked for (full_backup: [{stage.name}] takes one)"
            context.log.info(f"no full backup of the {stage.name} stage ({why}): the stage records exactly what it changes "
                             "(before-images and inserted keys) in its own transaction, for undo_import")
            yield dg.MaterializeResult(metadata={
                "backup": "change capture in the stage's transaction",
                "full_backup": dg.MetadataValue.bool(False),
                "why": why,
            })
            return
        unchanged = _all_unchanged(hrms_db, stage, options)
        if unchanged is not None:
            reason = ("no file configured" if not unchanged else
                      f"every file is unchanged since import record(s) {', '.join(f'#{i}' for i in unchanged)}: the stage will write nothing")
            context.log.info(f"no backup needed: {reason}")
            yield dg.MaterializeResult(metadata={"backup": f"not needed: {reason}"})
            return
        with hrms_db.connection(READER) as conn:
            manifest = backups.take_backup(conn, stage.tables, label=f"import_{stage.name}", run_id=context.run.run_id)
        context.log.info(f"backup {manifest.backup_id}: {manifest.total_rows} rows of {len(manifest.tables)} tables in {manifest.directory}")
        yield dg.MaterializeResult(metadata={**manifest.to_metadata(), "full_backup": dg.MetadataValue.bool(True)})

    return backup_asset


def make_import_asset(stage: Stage):
    @dg.asset(
        name=import_key(stage).path[-1],
        deps=[backup_key(stage)],
        group_name=GROUP,
        kinds={"postgres", "csv"},
        owners=OWNERS,
        pool=settings.WRITER_POOL,
        output_required=False,
        description=DESCRIPTIONS[stage.name] + " One transaction as the import role; never deletes.",
        metadata={"dagster/column_schema": schemas.column_schema(stage.name)},
    )
    @transient_retries
    def import_asset(context: dg.AssetExecutionContext, hrms_db: HrmsDatabase, hrms_import_options: ImportOptions):
        options = checked(hrms_import_options)
        if options.dry_run:
            rehearse_stages(context, hrms_db, options, stage)
            return
        log = _log(context, options, stage.name)
        try:
            result = run(hrms_db, stage, options, run_id=context.run.run_id, log=log)
        except ImportFileError as exc:
            log.error(str(exc))
            raise dg.Failure(description=_described(exc), metadata=summaries.rejects_metadata(exc.rejects)) from None
        except (StageFailed, locks.LockNotAvailable) as exc:
            log.error(str(exc))
            metadata = summaries.stage_metadata(exc.result) if getattr(exc, "result", None) else {}
            raise dg.Failure(description=_described(exc), metadata=metadata) from None
        if not result.files:
            log.info("no file configured for this stage; nothing imported")
        counts = None
        if result.files and not result.unchanged:   # what the run changed, and the tables' estimated sizes
            with hrms_db.connection(READER) as conn:
                counts = summaries.table_estimates(conn)
        yield dg.MaterializeResult(metadata=summaries.stage_metadata(result, counts))

    return import_asset


def _described(exc: Exception) -> str:
    """The failure as the run shows it, with the database error if its failed import record could not be written."""
    text = str(exc)
    if getattr(exc, "record_error", None):
        text += f"\n\nThe failed import record could not be written: {exc.record_error}"
    return text


def build_assets() -> list:
    built = []
    upstream = None
    for stage in STAGES:
        built.append(make_backup_asset(stage, upstream))
        built.append(make_import_asset(stage))
        upstream = import_key(stage)
    return built


import_assets = build_assets()
backup_ladders, import_ladders, backup_org, import_org, backup_users, import_users, backup_history, import_history = import_assets
