"""`hrms_import`: the whole import graph (backups, four stages, their checks) in one asset job."""


import dagster as dg

from hrms_pipelines.imports.assets import GROUP

hrms_import = dg.define_asset_job(
    "hrms_import",
    selection=dg.AssetSelection.groups(GROUP),
    description="Import ladders -> organisation -> users -> history from the CSV files of the import directory, "
                "each stage backed up first, one transaction each, never deleting. Options: resources.hrms_import_options.",
    tags={"hrms/kind": "import"},
)
