"""`hrms_import`: the whole import graph (backups, four stages, their checks) in one asset job; and
`hrms_import_dry_run`, the read-only rehearsal of it that never waits behind a writer."""


import dagster as dg

from hrms_pipelines.imports.assets import GROUP, STAGES, checked, rehearse_stages
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.resources import HrmsDatabase
from hrms_pipelines.retries import transient_retries

hrms_import = dg.define_asset_job(
    "hrms_import",
    selection=dg.AssetSelection.groups(GROUP),
    description="Import ladders -> organisation -> users -> history from the CSV files of the import directory, "
                "each stage backed up first, one transaction each, never deleting. Options: resources.hrms_import_options.",
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
