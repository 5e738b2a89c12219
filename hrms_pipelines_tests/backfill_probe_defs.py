"""A code location for the kill -9 test: the built-in backfills plus `increment_probe`, which adds 1 to
every row of hrms.backfill_probe with no predicate, so only the checkpoint stands between a resumed
run and a second increment: any batch applied twice shows as a counter of 2.

    dagster job execute -f hrms_pipelines_tests/backfill_probe_defs.py -j data_backfill \
        --tags '{"dagster/partition": "increment_probe"}'
"""

import dagster as dg

from hrms_pipelines.backfills import builtin
from hrms_pipelines.backfills.jobs import build_data_backfill_job
from hrms_pipelines.backfills.registry import Batch, BackfillRegistry, Options
from hrms_pipelines.io_manager import hrms_io_manager
from hrms_pipelines.resources import HrmsDatabase

PROBE_TABLE_DDL = """
CREATE TABLE hrms.backfill_probe (id bigint PRIMARY KEY, counter integer NOT NULL DEFAULT 0);
GRANT SELECT, UPDATE ON hrms.backfill_probe TO hrms_importer;
"""

probe_registry = BackfillRegistry()
builtin.register_builtin(probe_registry)


@probe_registry.backfill(
    "increment_probe",
    table="backfill_probe",
    description="counter + 1 on every row; guarded only by the checkpoint",
    pending=None,
    defaults=Options(batch_size=20, sleep_seconds=0.05, target_batch_ms=None, max_active_backends=None,
                     max_lock_wait_ms=None, progress_every_seconds=1),
)
def increment_probe(batch: Batch) -> int:
    return batch.update("counter = counter + 1")


probe_job = build_data_backfill_job(probe_registry)

defs = dg.Definitions(jobs=[probe_job], resources={"hrms_db": HrmsDatabase(), "io_manager": hrms_io_manager}, executor=dg.in_process_executor)
