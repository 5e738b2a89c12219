"""Every numeric knob a UI user sets at launch has a bound, named when refused, and a refused launch
changes nothing (issue 17 item 7). The runner's knobs: test_migration_bounds.py; the backfills':
test_backfill_jobs.py. Here: the import's, undo_import's and audit-log partitions'."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from hrms_pipelines import audit_partitions as ap
from hrms_pipelines.definitions import defs
from hrms_pipelines.imports.options import RESOURCE_KEY


def scalar(url: str, query: str):
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.all_events
                     if e.is_failure and e.event_specific_data is not None and getattr(e.event_specific_data, "error", None))


@pytest.mark.parametrize("config,limit", [({"months_ahead": 1000}, "24"), ({"attempts": 0}, "1"),
                                          ({"retry_wait_seconds": 86_400}, "60"),
                                          ({"lock_timeout": "0"}, "10min"), ({"lock_timeout": "2h"}, "10min")])
def test_audit_partitions_refuse_a_knob_past_its_bound_and_create_nothing(hrms_db, database_url, config, limit):
    before = scalar(database_url, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'hrms.core_auditlog'::regclass")
    result = dg.materialize([ap.core_auditlog_partitions], resources={"hrms_db": hrms_db},
                            run_config={"ops": {ap.ASSET: {"config": config}}}, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert next(iter(config)) in text and limit in text, text
    assert scalar(database_url, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'hrms.core_auditlog'::regclass") == before


@pytest.mark.parametrize("config,limit", [({"chunk_rows": 10**9}, "500000"), ({"chunk_rows": 1}, "100"),
                                          ({"lock_timeout": "0"}, "10min"), ({"lock_timeout": "1h"}, "10min")])
def test_an_import_refuses_a_knob_past_its_bound_and_writes_nothing(hrms_db, database_url, config, limit):
    job = defs.resolve_job_def("hrms_import")
    result = job.execute_in_process(run_config={"resources": {RESOURCE_KEY: {"config": config}}},
                                    resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert next(iter(config)) in text and limit in text, text
    assert scalar(database_url, "SELECT count(*) FROM hrms.imports_importrecord") == 0
    assert scalar(database_url, "SELECT count(*) FROM hrms.employees_employee") == 0


def test_undo_import_refuses_an_unbounded_lock_timeout():
    job = defs.resolve_job_def("undo_import")
    op = next(iter(job.graph.node_dict))
    with pytest.raises(Exception, match="past its limit of 10min"):
        job.execute_in_process(run_config={"ops": {op: {"config": {"run_id": "x", "lock_timeout": "1h"}}}})
