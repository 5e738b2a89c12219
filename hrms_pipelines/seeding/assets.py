"""The `reference_data` asset: one partition per fixture, loaded idempotently by natural key."""

import dagster as dg

from hrms_pipelines.retries import transient_retries
from hrms_pipelines import settings
from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.resources import HrmsDatabase
from hrms_pipelines.seeding import loader
from hrms_pipelines.seeding.fixtures import FixtureError
from hrms_pipelines.seeding.partitions import seed_partitions

SEED_ASSET = "reference_data"
SEED_GROUP = "seeds"


class SeedConfig(dg.Config):
    dry_run: bool = False
    """Do everything in a transaction that is rolled back: report what would be inserted."""


def result_metadata(results: list[loader.FixtureResult], *, environment: str, dry_run: bool) -> dict:
    main = results[-1]
    metadata: dict = {
        "fixture": main.fixture.key,
        "table": f"{settings.HR_SCHEMA}.{main.fixture.table}",
        "rows_in_file": main.rows_in_file,
        ("would_insert" if dry_run else "inserted"): len(main.inserted),
        "already_present": main.already_present,
        "dry_run": dry_run,
        "environment": environment,
    }
    if main.inserted:
        metadata["inserted_keys"] = dg.MetadataValue.md(
            markdown_table(["natural key"], [[k] for k in main.inserted], limit=loader.SHOWN_KEYS))
    for name, count in main.notes.items():
        metadata[name.replace(" ", "_")] = count
    if len(results) > 1:
        metadata["required_fixtures"] = dg.MetadataValue.md(markdown_table(
            ["fixture", "rows", "would insert" if dry_run else "inserted", "already present"],
            [[r.fixture.key, r.rows_in_file, len(r.inserted), r.already_present] for r in results[:-1]],
        ))
    return metadata


def build_reference_data_asset(environment: str | None = None) -> dg.AssetsDefinition:
    """The seed asset for an environment (default: HRMS_ENV); tests build other environments' flavours."""

    @dg.asset(
        name=SEED_ASSET,
        group_name=SEED_GROUP,
        owners=["team:hr-data"],
        partitions_def=seed_partitions(environment),
        pool=settings.WRITER_POOL,
        kinds={"postgres"},
        description=(
            "Reference data of the seed's 'What Gets Loaded' table, one partition per fixture in "
            "seeds/fixtures/. Inserts the rows whose natural key is missing; never updates or deletes. "
            "Only the fixtures of this deployment's HRMS_ENV are partitions, and the asset refuses any other."
        ),
    )
    @transient_retries
    def reference_data(context: dg.AssetExecutionContext, config: SeedConfig, hrms_db: HrmsDatabase) -> dg.MaterializeResult:
        fixture_key = context.partition_key
        # Decided again at run time, whatever partition set the launching UI had.
        current = settings.environment()
        try:
            results = loader.load_fixtures(
                hrms_db, [fixture_key], environment=current, dry_run=config.dry_run,
                run_id=context.run.run_id, log=context.log.info,
            )
        except FixtureError as exc:
            raise dg.Failure(str(exc)) from None
        if config.dry_run:
            context.log.info("dry run: everything above was rolled back")
        return dg.MaterializeResult(metadata=result_metadata(results, environment=current, dry_run=config.dry_run))

    return reference_data


reference_data = build_reference_data_asset()
