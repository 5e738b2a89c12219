"""Asset checks: every validation the seed lists, on its stage's import asset, showing the
offending rows. Blocking (ERROR) where the next stage would build on bad data."""


import dagster as dg

from hrms_pipelines.imports import validations
from hrms_pipelines.imports.assets import GROUP
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import READER, HrmsDatabase
from hrms_pipelines.errors import error_boundary

# Check names, one per validation (the same names as hrms_pipelines.imports.validations).
CHECK_NAMES = tuple(v.name for v in validations.VALIDATIONS)


def make_check(validation: validations.Validation):
    @dg.asset_check(
        name=validation.name,
        asset=dg.AssetKey(f"import_{validation.stage}"),
        blocking=validation.blocking,
        description=validation.description + (" Blocking: the next stage does not run when it fails." if validation.blocking else ""),
    )
    @error_boundary
    def check(hrms_db: HrmsDatabase) -> dg.AssetCheckResult:
        with hrms_db.connection(READER) as conn:
            count, rows = validation.offending(conn)
        metadata = {"offending_rows": dg.MetadataValue.int(count)}
        if count:
            metadata["rows"] = dg.MetadataValue.md(markdown_table(validation.headers, rows, limit=validations.LIMIT)
                                                   + (f"\n\n(first {validations.LIMIT} of {count})" if count > validations.LIMIT else ""))
        return dg.AssetCheckResult(
            passed=count == 0,
            severity=dg.AssetCheckSeverity.ERROR if validation.blocking else dg.AssetCheckSeverity.WARN,
            metadata=metadata,
        )

    return check


import_checks = [make_check(v) for v in validations.VALIDATIONS]
__all__ = ["import_checks", "CHECK_NAMES", "GROUP"]
