"""Asset checks: every validation the seed lists, on its stage's import asset, showing the
offending rows (personal data masked). Blocking (ERROR) where the next stage would build on bad data.

What a check looks at depends on the run, so that a nightly run costs what changed and nothing is
validated twice in one run:

- in an `hrms_import` run that materialized its asset, the check reports what the stage's own
  validations found inside its transaction, over the rows it inserted or updated and their direct
  relations (they ran once, before commit; the check does not run them again). A stage run with
  `validate: false` did not validate: the check then runs the scoped query itself over the rows the
  run's import records changed (read from the undo store).
- in a run tagged `hrms/validation_scope: whole_tables` -- the `validate_hr_data` job, on its
  schedule or launched by hand -- and whenever the check runs without its asset (the UI's "Execute
  checks"), it checks the whole tables.
"""


import dagster as dg
from dagster._core.errors import DagsterInvalidPropertyError

from hrms_pipelines.imports import summaries, validations
from hrms_pipelines.imports.assets import GROUP
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import READER, HrmsDatabase
from hrms_pipelines.errors import error_boundary

# Check names, one per validation (the same names as hrms_pipelines.imports.validations).
CHECK_NAMES = tuple(v.name for v in validations.VALIDATIONS)
SCOPE_TAG = "hrms/validation_scope"
WHOLE_TABLES = "whole_tables"


def _run(context) -> "dg.DagsterRun | None":
    try:
        return context.run
    except DagsterInvalidPropertyError:   # invoked directly, outside any run
        return None


def _this_runs_materialization(context, validation: validations.Validation, run):
    if run is None:
        return None
    event = context.instance.get_latest_materialization_event(dg.AssetKey(f"import_{validation.stage}"))
    if event is None or event.run_id != run.run_id:
        return None
    return event.asset_materialization.metadata


def evaluate(context, hrms_db: HrmsDatabase, validation: validations.Validation) -> tuple[int, list, str]:
    """(offending rows, the first of them masked, what was checked)."""
    run = _run(context)
    whole = run is None or run.tags.get(SCOPE_TAG) == WHOLE_TABLES
    metadata = None if whole else _this_runs_materialization(context, validation, run)
    if metadata is None:
        with hrms_db.connection(READER) as conn:
            count, rows = validation.offending(conn)
        return count, validation.masked(rows), "whole tables"
    recorded = metadata.get(summaries.VALIDATION_RESULTS)
    if recorded is not None and validation.name in recorded.value:
        found = recorded.value[validation.name]
        return found["count"], found["rows"], f"{found['scope']} (validated inside the stage's transaction, before commit)"
    if metadata.get("outcome") is not None and metadata["outcome"].value == "unchanged":
        return 0, [], "nothing: every file of the stage was unchanged, this run imported nothing"
    with hrms_db.connection(READER) as conn:
        record_ids = [r[0] for r in conn.execute(
            "SELECT id FROM hrms.imports_importrecord WHERE run_id = %s AND stage = %s AND outcome = 'succeeded' ORDER BY id",
            [run.run_id, validation.stage]).fetchall()]
        if not record_ids:
            return 0, [], "nothing: this run imported nothing for this stage"
        scope = validations.RecordsScope(record_ids)
        count, rows = validation.offending(conn, scope=scope)
    return count, validation.masked(rows), scope.label


def make_check(validation: validations.Validation):
    @dg.asset_check(
        name=validation.name,
        asset=dg.AssetKey(f"import_{validation.stage}"),
        blocking=validation.blocking,
        description=validation.description + (" Blocking: the next stage does not run when it fails." if validation.blocking else "")
        + " In an import run: the rows the run changed (validated once, in the stage's transaction); "
          "in validate_hr_data: the whole tables.",
    )
    @error_boundary
    def check(context: dg.AssetCheckExecutionContext, hrms_db: HrmsDatabase) -> dg.AssetCheckResult:
        count, rows, scope = evaluate(context, hrms_db, validation)
        metadata = {"offending_rows": dg.MetadataValue.int(count), "scope": dg.MetadataValue.text(scope)}
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
__all__ = ["import_checks", "CHECK_NAMES", "GROUP", "SCOPE_TAG", "WHOLE_TABLES"]
