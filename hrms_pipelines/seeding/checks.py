"""Per fixture (partition): every natural key of the fixture file is present in its table."""

import dagster as dg

from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import HrmsDatabase
from hrms_pipelines.seeding import fixtures, loader
from hrms_pipelines.seeding.assets import SEED_ASSET
from hrms_pipelines.seeding.partitions import seed_partitions
from hrms_pipelines.errors import error_boundary

FIXTURE_ROWS_PRESENT = "fixture_rows_present"


def build_fixture_rows_present_check(environment: str | None = None) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=SEED_ASSET,
        name=FIXTURE_ROWS_PRESENT,
        partitions_def=seed_partitions(environment),
        description="Every row of the fixture file (by natural key) is in its table.",
    )
    @error_boundary
    def fixture_rows_present(context: dg.AssetCheckExecutionContext, hrms_db: HrmsDatabase) -> dg.AssetCheckResult:
        fixture = fixtures.get(context.partition_key)
        rows_in_file, missing = loader.missing_natural_keys(hrms_db, fixture)
        metadata: dict = {"fixture": fixture.key, "rows_in_file": rows_in_file, "missing": len(missing)}
        if missing:
            metadata["missing_keys"] = dg.MetadataValue.md(
                markdown_table([", ".join(fixture.natural_key)], [[k] for k in missing], limit=loader.SHOWN_KEYS))
        return dg.AssetCheckResult(
            passed=not missing,
            metadata=metadata,
            description=None if not missing else
            f"{len(missing)} of {rows_in_file} rows of {fixture.filename} are missing: load the {fixture.key!r} partition",
        )

    return fixture_rows_present


fixture_rows_present = build_fixture_rows_present_check()
