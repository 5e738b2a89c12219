"""`hrms_import`: the whole import graph (backups, four stages, their checks) in one asset job;
`hrms_import_dry_run`, the read-only rehearsal of it that never waits behind a writer; and
`validate_hr_data`, the same checks over the whole tables (explicit, scheduled, never in a nightly run);
`undo_import`, which undoes a whole import run from what its stages recorded."""


import dagster as dg
from pydantic import field_validator

from hrms_pipelines.imports import checks
from hrms_pipelines.imports.assets import GROUP, STAGES, checked, rehearse_stages
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines import settings
from hrms_pipelines.migrations import bounds
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import RESTORER, HrmsDatabase
from hrms_pipelines.retries import transient_retries

hrms_import = dg.define_asset_job(
    "hrms_import",
    selection=dg.AssetSelection.groups(GROUP),
    description="Import ladders -> organisation -> users -> history from the CSV files of the import directory, "
                "one transaction each that records what it changes (undo_import undoes a run; full backups with full_backup), "
                "never deleting; checks over the rows the run changed. Options: resources.hrms_import_options.",
    tags={"hrms/kind": "import"},
)


@dg.op(
    description="Every import stage in ONE transaction that is rolled back: reports what would be inserted, updated, "
                "left unchanged, skipped and rejected. Read-only, so it is not in the writer pool: it never queues "
                "behind an import, seed, backfill or migration.",
)
@transient_retries
def rehearse_import(context: dg.OpExecutionContext, hrms_db: HrmsDatabase, hrms_import_options: ImportOptions) -> None:
    options = checked(hrms_import_options).model_copy(update={"dry_run": True})
    rehearse_stages(context, hrms_db, options, STAGES[0])


@dg.job(
    description="Dry run of hrms_import (the seed's --dry-run): same files and options, nothing written, no backup, "
                "no materialization. Options: resources.hrms_import_options.",
    tags={"hrms/kind": "import", "hrms/read_only": "true"},
)
def hrms_import_dry_run() -> None:
    rehearse_import()


validate_hr_data = dg.define_asset_job(
    "validate_hr_data",
    selection=dg.AssetSelection.checks(*checks.import_checks),
    description="Every import validation over the WHOLE HR tables (the import's asset checks, without importing). "
                "A nightly hrms_import run checks only the rows it changed, inside each stage's transaction; "
                "whole-table work is this job: launch it any time, or turn on its schedule validate_hr_data_weekly.",
    tags={checks.SCOPE_TAG: checks.WHOLE_TABLES, "hrms/kind": "validation", "hrms/read_only": "true"},
)


class UndoImportConfig(dg.Config):
    run_id: str
    """The hrms_import run to undo (its run id, as the UI and the import records show it)."""
    dry_run: bool = False
    """Do everything, then roll back: report what the undo would put back and remove (values masked)."""
    lock_timeout: str = "10s"
    """How long to wait for writers on the run's tables before giving up."""

    @field_validator("lock_timeout")
    @classmethod
    def _bounded_lock_timeout(cls, value: str) -> str:
        bounds.LOCK_TIMEOUT.check(value)  # 0 would wait forever, holding the writers' pool
        return value


@dg.op(
    description="Undo a whole import run in one transaction as the restorer: put back the before-images of every row "
                "it updated and remove every row it inserted (newest stage first), audit each, mark its import records "
                "undone. Refuses, changing nothing, when a later import changed the same rows.",
    pool=settings.WRITER_POOL,
)
@transient_retries
def undo_import_run(context: dg.OpExecutionContext, config: UndoImportConfig, hrms_db: HrmsDatabase) -> None:
    from hrms_pipelines.imports import undo

    context.log.info(f"{'dry run: ' if config.dry_run else ''}undo of import run {config.run_id} on {hrms_db.display_url(RESTORER)}")
    with hrms_db.connection(RESTORER) as conn:
        try:
            result = undo.undo_run(conn, config.run_id, undo_run_id=context.run_id, dry_run=config.dry_run,
                                   lock_timeout=config.lock_timeout, log=context.log.info)
        except undo.UndoRefused as exc:
            raise dg.Failure(description=str(exc)) from None
    text = result.table_markdown() + "\n\n" + result.records_markdown()
    if result.full_reads:
        text += "\n\n" + ("after it, " if result.dry_run else "") + result.full_reads
    context.log.info(("dry run, nothing was changed; the undo would do:\n" if result.dry_run else "undone:\n") + text)
    metadata = {
        "run_id": dg.MetadataValue.text(config.run_id),
        "dry_run": dg.MetadataValue.bool(result.dry_run),
        "tables": dg.MetadataValue.md(result.table_markdown()),
        "import_records": dg.MetadataValue.md(result.records_markdown()),
        "rows_put_back": dg.MetadataValue.int(sum(t["restored"] for t in result.totals().values())),
        "rows_removed": dg.MetadataValue.int(sum(t["removed"] for t in result.totals().values())),
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "next_import": dg.MetadataValue.text(result.full_reads or "no shortcut was taken back"),
    }
    if result.preview:
        table = markdown_table(["stage", "table", "action", "row", "field", "now", "after the undo"], result.preview)
        context.log.info("what the undo would change (first rows, sensitive values masked):\n" + table)
        metadata["preview"] = dg.MetadataValue.md(table)
    context.add_output_metadata(metadata)


@dg.job(
    description="Undo a whole hrms_import run (ops.undo_import_run.config.run_id), exactly, from what its stages recorded; "
                "dry_run shows what it would change. A later run that changed the same rows must be undone first.",
    tags={"hrms/kind": "undo"},
)
def undo_import() -> None:
    undo_import_run()
