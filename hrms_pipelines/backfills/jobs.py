"""`data_backfill` (one partition per registered backfill), `field_backfill` (the generic one) and
`undo_backfill` (puts back what runs of either changed).

    dagster job execute -m hrms_pipelines -j data_backfill --tags '{"dagster/partition": "set_employee_status"}'
    dagster job execute -m hrms_pipelines -j field_backfill -c field.yaml
    dagster job execute -m hrms_pipelines -j undo_backfill -c undo.yaml

A UI launch of a `data_backfill` partition (or a backfill over several) passes no config: each
backfill's registered defaults apply. The launchpad can override them for one run:

    ops:
      run_backfill:
        config: {batch_size: 2000, sleep_seconds: 0.05, dry_run: true}
"""

# No `from __future__ import annotations` here: Dagster must resolve the Config annotations.

import dataclasses
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from hrms_pipelines.retries import transient_retries
from hrms_pipelines import settings
from hrms_pipelines.backfills import engine, undo
from hrms_pipelines.backfills.field import OPERATORS, FieldSpec, FilterSpec, as_backfill
from hrms_pipelines.backfills.registry import Backfill, BackfillError, BackfillRegistry, Options, registry
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import IMPORTER, HrmsDatabase


class ThrottleConfig(dg.Config):
    sleep_seconds: Optional[float] = Field(default=None, description="Pause between batches (seconds).")
    target_batch_ms: Optional[int] = Field(
        default=None, description="Adapt the batch size to keep batches near this duration (ms).")
    adaptive: bool = Field(default=True, description="false: keep batch_size fixed.")
    statement_timeout: Optional[str] = Field(default=None, description="Per batch, e.g. '5s'.")
    lock_timeout: Optional[str] = Field(default=None, description="Per batch, e.g. '1s'.")
    pause_when_busy: bool = Field(default=True, description="Pause while the database is busy.")
    max_active_backends: Optional[int] = Field(
        default=None, description="Busy when more client backends than this are active in the database.")
    max_lock_wait_ms: Optional[int] = Field(
        default=None, description="Busy when a session has waited longer than this for a lock (ms).")
    max_batches: Optional[int] = Field(
        default=None, description="Stop after this many batches; the next launch resumes.")
    max_runtime_seconds: Optional[float] = Field(
        default=None, description="Stop after this long (default 4 h, at most 12 h); the next launch resumes.")
    max_busy_wait_seconds: Optional[float] = Field(
        default=None, description="Fail (checkpoint kept) after pausing this long in one go (default 600, at most 3600).")

    def options(self, defaults: Options, batch_size: Optional[int]) -> Options:
        options = defaults.override(
            batch_size=batch_size, sleep_seconds=self.sleep_seconds, target_batch_ms=self.target_batch_ms,
            statement_timeout=self.statement_timeout, lock_timeout=self.lock_timeout,
            max_active_backends=self.max_active_backends, max_lock_wait_ms=self.max_lock_wait_ms,
            max_batches=self.max_batches, max_runtime_seconds=self.max_runtime_seconds,
            max_busy_wait_seconds=self.max_busy_wait_seconds,
        )
        # Switching a throttle off sets its option to None, which override() would skip.
        if not self.adaptive:
            options = dataclasses.replace(options, target_batch_ms=None)
        if not self.pause_when_busy:
            options = dataclasses.replace(options, max_active_backends=None, max_lock_wait_ms=None)
        options.validate()
        return options


class RunControls(ThrottleConfig):
    restart: bool = Field(default=False, description="Forget the checkpoint and start from the first key.")
    dry_run: bool = Field(default=False, description="Only count the rows that would change.")


class BackfillRunConfig(RunControls):
    """Overrides of the backfill's registered defaults, for this run only (empty: the defaults)."""

    batch_size: Optional[int] = Field(default=None, description="Rows in the first batch.")


def _run(context: dg.OpExecutionContext, hrms_db: HrmsDatabase, backfill: Backfill, options: Options,
         config: RunControls) -> dg.Output:
    context.log.info(f"backfill {backfill.name} on database {hrms_db.display_url(IMPORTER)}")
    # A BackfillError (or a database error) leaves the op through the error boundary of
    # transient_retries: retried when transient, else a dg.Failure with a masked message.
    result = engine.run(hrms_db, backfill, options, log=context.log, restart=config.restart,
                        dry_run=config.dry_run, run_id=context.run_id)
    figures = result.metadata()
    metadata: dict[str, Any] = {
        **figures, "summary": dg.MetadataValue.md(markdown_table(["figure", "value"], [[k, v] for k, v in figures.items()]))}
    if not result.dry_run and result.rows_changed:
        metadata["undo_with"] = dg.MetadataValue.md(
            f"`undo_backfill`, config `{{backfill: \"{result.name}\", run_id: \"{result.run_id}\"}}`")
    return dg.Output(None, metadata=metadata)


def registry_table(target: BackfillRegistry) -> str:
    rows = [[b.name, f"{settings.HR_SCHEMA}.{b.table}", b.kind, b.defaults.batch_size, b.defaults.sleep_seconds,
             b.defaults.target_batch_ms or "-", b.description] for b in target]
    return markdown_table(["backfill", "table", "kind", "batch size", "sleep s", "target ms", "description"], rows)


def build_data_backfill_job(target: BackfillRegistry, name: str = "data_backfill") -> dg.JobDefinition:
    """The partitioned job over `target`'s backfills (tests build one over their own registry)."""
    partitions = dg.StaticPartitionsDefinition(target.names())
    listing = registry_table(target)

    @dg.op(
        name="run_backfill",
        description="Run the backfill named by the partition key: keyset batches, checkpoint, throttle.\n\n" + listing,
        out=dg.Out(dg.Nothing),
        pool=settings.WRITER_POOL,
        tags={"kind": "backfill"},
    )
    @transient_retries
    def run_backfill(context: dg.OpExecutionContext, config: BackfillRunConfig, hrms_db: HrmsDatabase) -> dg.Output:
        if not context.has_partition_key:
            raise dg.Failure(description=(
                f"{name} runs one registered backfill per partition; launch a partition from the UI or pass "
                f"--tags '{{\"dagster/partition\": \"NAME\"}}'. Registered: {', '.join(target.names())}"))
        try:
            backfill = target.get(context.partition_key)
            options = config.options(backfill.defaults, config.batch_size)
        except BackfillError as exc:
            raise dg.Failure(description=str(exc)) from None
        return _run(context, hrms_db, backfill, options, config)

    @dg.job(
        name=name,
        partitions_def=partitions,
        description="Batched, resumable data backfills: one partition per registered backfill.\n\n" + listing,
        tags={"hrms/area": "backfills"},
    )
    def data_backfill_job() -> None:
        run_backfill()

    return data_backfill_job


class FilterConfig(dg.Config):
    column: str = Field(description="Column the filter tests.")
    operator: str = Field(default="=", description="One of: " + ", ".join(OPERATORS) + ".")
    value: Any = Field(default=None, description="A value (a list for `in`; none for is_null / is_not_null).")


class FieldBackfillConfig(RunControls):
    """The seed's `backfill_data --model --field --value --filter --batch-size --sleep --resume`."""

    table: str = Field(description="HR table: employees_employee, hrms.employees_employee or employees.Employee.")
    column: str = Field(description="Column to set.")
    value: Any = Field(description="Value to set (null sets NULL); converted by PostgreSQL to the column's type.")
    filter: Optional[FilterConfig] = Field(default=None, description="Only rows matching this condition.")
    batch_size: int = Field(default=1000, description="Rows in the first batch.")
    sleep_seconds: Optional[float] = Field(default=0.1, description="Pause between batches (seconds).")


@dg.op(
    description="Set one column of an HR table to one value where a structured filter matches, in keyset batches; "
                "validated against the live schema before anything changes. Resumes from its checkpoint.",
    out=dg.Out(dg.Nothing),
    pool=settings.WRITER_POOL,
    tags={"kind": "backfill"},
)
@transient_retries
def run_field_backfill(context: dg.OpExecutionContext, config: FieldBackfillConfig, hrms_db: HrmsDatabase) -> dg.Output:
    spec = FieldSpec(
        table=config.table, column=config.column, value=config.value,
        filter=FilterSpec(config.filter.column, config.filter.operator, config.filter.value) if config.filter else None,
    )
    backfill = as_backfill(spec)
    try:
        options = config.options(Options(), config.batch_size)
    except BackfillError as exc:
        raise dg.Failure(description=str(exc)) from None
    return _run(context, hrms_db, backfill, options, config)


@dg.job(
    description="Generic field backfill (table, column, value, filter) in resumable keyset batches.",
    tags={"hrms/area": "backfills"},
)
def field_backfill() -> None:
    run_field_backfill()


class UndoConfig(ThrottleConfig):
    """Which runs to undo (a backfill's name, a run id, or both) and how."""

    backfill: Optional[str] = Field(
        default=None, description="The backfill whose runs to undo: its registered name (a data_backfill partition) "
                                  "or the checkpoint name a field_backfill run logged (field:<table>.<column>:<digest>). "
                                  "Without run_id: every run of it not undone yet, newest first.")
    run_id: Optional[str] = Field(default=None, description="The Dagster run id of the backfill run to undo.")
    dry_run: bool = Field(
        default=False, description="Count what would be restored, already back, changed since or missing, show "
                                   "examples (values masked); change nothing.")
    overwrite_changed: bool = Field(
        default=False, description="Also put back rows changed since the backfill (their values then go to the "
                                   "audit log). Default: leave them and report them.")
    batch_size: Optional[int] = Field(
        default=None, description="The backfill's recorded batches in the first undo batch (default 1; then sized "
                                  "toward target_batch_ms).")


@dg.op(
    description="Put back the previous values of every row the chosen backfill runs changed (newest run first), in "
                "keyset batches with checkpoint and throttle, audited (action 'undo'); rows changed since are left "
                "and reported unless overwrite_changed. Each run is marked undone, once.",
    out=dg.Out(dg.Nothing),
    pool=settings.WRITER_POOL,
    tags={"kind": "backfill"},
)
@transient_retries
def run_undo(context: dg.OpExecutionContext, config: UndoConfig, hrms_db: HrmsDatabase) -> dg.Output:
    context.log.info(f"undo on database {hrms_db.display_url(IMPORTER)}")
    options = config.options(undo.DEFAULTS, config.batch_size)
    report = undo.undo(hrms_db, backfill=config.backfill, run_id=config.run_id, options=options, log=context.log,
                       overwrite_changed=config.overwrite_changed, dry_run=config.dry_run, undo_run_id=context.run_id)
    metadata: dict[str, Any] = {**report.figures(),
                                **{key: dg.MetadataValue.md(table) for key, table in report.tables().items()}}
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Undo backfill runs (data_backfill or field_backfill): restore the previous values they recorded. "
                "Config: backfill and/or run_id; dry_run first.",
    tags={"hrms/area": "backfills"},
)
def undo_backfill() -> None:
    run_undo()


data_backfill = build_data_backfill_job(registry)
