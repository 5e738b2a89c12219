"""The seed jobs.

- `seed_reference_data`: the partitioned asset job; the UI launches one fixture, or all of them as a
  backfill. From the command line: `--tags '{"dagster/partition": "roles"}'`.
- `seed_environment`: the seed's `seed-production.sh --env X` in one run and one transaction: every
  fixture of this deployment's HRMS_ENV (or the ones listed), then a verification. `make demo` runs it.
"""

import dagster as dg

from hrms_pipelines.retries import transient_retries
from hrms_pipelines import settings
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import HrmsDatabase
from hrms_pipelines.seeding import fixtures, loader
from hrms_pipelines.seeding.assets import SEED_ASSET, result_metadata
from hrms_pipelines.seeding.fixtures import FixtureError
from hrms_pipelines.errors import error_boundary

seed_reference_data = dg.define_asset_job(
    "seed_reference_data",
    selection=dg.AssetSelection.assets(SEED_ASSET),
    description="Load one fixture of the seed data (one partition per fixture of this HRMS_ENV) and check it.",
    tags={"hrms/kind": "seed"},
)


class SeedEnvironmentConfig(dg.Config):
    dry_run: bool = False
    """Do everything, report what would be inserted, roll back."""
    fixtures: list[str] = []
    """Only these fixtures (and what they require); default: every fixture of HRMS_ENV."""


@dg.op(description="Load the environment's fixtures in one transaction as the import role.", pool=settings.WRITER_POOL)
@transient_retries
def load_environment_fixtures(
    context: dg.OpExecutionContext, config: SeedEnvironmentConfig, hrms_db: HrmsDatabase
) -> list[str]:
    environment = settings.environment()
    try:
        keys = config.fixtures or [f.key for f in fixtures.for_environment(environment)]
        results = loader.load_fixtures(
            hrms_db, keys, environment=environment, dry_run=config.dry_run, run_id=context.run.run_id, log=context.log.info,
        )
    except FixtureError as exc:
        raise dg.Failure(str(exc)) from None
    verb = "would insert" if config.dry_run else "inserted"
    table = markdown_table(
        ["fixture", "table", "rows", verb, "already present"],
        [[r.fixture.key, r.fixture.table, r.rows_in_file, len(r.inserted), r.already_present] for r in results],
    )
    context.log.info(f"{settings.ENVIRONMENT_ENV}={environment}{' (dry run, rolled back)' if config.dry_run else ''}\n{table}")
    if not config.dry_run:
        for result in results:
            # The rows are now what the partition of the seed asset stands for: record it there too.
            context.log_event(dg.AssetMaterialization(
                asset_key=SEED_ASSET, partition=result.fixture.key,
                metadata=result_metadata([result], environment=environment, dry_run=False),
            ))
    context.add_output_metadata({
        "environment": environment,
        "dry_run": config.dry_run,
        "fixtures": dg.MetadataValue.md(table),
        verb.replace(" ", "_"): sum(len(r.inserted) for r in results),
    })
    return [] if config.dry_run else [r.fixture.key for r in results]


@dg.op(description="Every natural key of every loaded fixture file is present in its table.")
@error_boundary
def verify_environment_fixtures(context: dg.OpExecutionContext, loaded: list[str], hrms_db: HrmsDatabase) -> None:
    problems = []
    for key in loaded:
        fixture = fixtures.get(key)
        rows_in_file, missing = loader.missing_natural_keys(hrms_db, fixture)
        if missing:
            problems.append(f"{key}: {len(missing)} of {rows_in_file} missing ({', '.join(missing[:10])})")
    if problems:
        raise dg.Failure("fixture rows missing after the seed:\n" + "\n".join(problems))
    context.log.info(f"verified {len(loaded)} fixture(s): every row present")


@dg.job(
    description="Seed every fixture of this deployment's HRMS_ENV in one transaction (the seed's seed-production.sh).",
    tags={"hrms/kind": "seed"},
)
def seed_environment() -> None:
    verify_environment_fixtures(load_environment_fixtures())
