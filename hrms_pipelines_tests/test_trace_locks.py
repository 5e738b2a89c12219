"""Trace observes locks deterministically, however busy the server (issue 18 item 6).

A statement run outside any transaction is held by the probe at a point it must wait at (CONCURRENTLY's
wait for writers; VACUUM's own lock request against the probe's SHARE UPDATE EXCLUSIVE), and the probe
lets go only after reading its locks there. These tests make the probe as slow as a descheduled process
on a loaded machine (each of its pauses between two reads of pg_locks takes 0.3 s instead of 1 ms):
what it reports does not change, because no clock decides when it lets go."""

from __future__ import annotations

import time

import pytest

from hrms_pipelines.migrations.trace import model, observe
from hrms_pipelines_tests.test_migration_trace import case_statements, trace_case

CASES = [
    ("-- hrms:non-transactional\nVACUUM (ANALYZE) hrms.payroll_payslip;\n",
     "hrms.payroll_payslip", "ShareUpdateExclusiveLock"),
    ("-- hrms:non-transactional\nCREATE INDEX CONCURRENTLY IF NOT EXISTS payroll_payslip_status_idx "
     "ON hrms.payroll_payslip (status);\n", "hrms.payroll_payslip", "ShareUpdateExclusiveLock"),
    ("-- hrms:non-transactional\nREINDEX INDEX CONCURRENTLY hrms.payroll_payslip_pkey;\n",
     "hrms.payroll_payslip", "ShareUpdateExclusiveLock"),
]


@pytest.fixture
def slow_probe(monkeypatch):
    real = time.sleep

    class SlowTime:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            real(max(seconds, 0.3))

    monkeypatch.setattr(observe, "time", SlowTime())


@pytest.mark.parametrize(("sql", "table", "mode"), CASES, ids=["vacuum", "create-index", "reindex"])
def test_a_slow_probe_still_sees_every_lock(sql, table, mode, tmp_path, slow_probe):
    report, case = trace_case(tmp_path, sql)
    [statement] = case_statements(report, case)
    assert statement.transaction == model.OUTSIDE_TRANSACTION and statement.error is None
    assert (table, mode) in {(lock.relation, lock.mode) for lock in statement.locks}, statement.locks
