"""Bounds on the runner's numeric knobs (issue 17 item 7): a value past its bound is refused, naming the
limit, before anything runs."""

from __future__ import annotations

import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.migrations import bounds, runner
from hrms_pipelines.migrations.jobs import apply_migrations, revert_migrations
from hrms_pipelines_tests.conftest import project_copy


@pytest.mark.parametrize(("lock", "statement", "said"), [
    ("11min", "30s", "lock_timeout='11min' is past its limit of 10min"),
    ("10s", "13h", "statement_timeout='13h' is past its limit of 12h"),
    ("0s", "30s", "lock_timeout='0s': must be more than 0"),
    ("10s", "0", "statement_timeout='0' is not a duration"),
    ("10", "30s", "lock_timeout='10' is not a duration: write it with its unit"),
])
def test_timeouts_past_their_bound_are_refused(lock, statement, said):
    with pytest.raises(bounds.KnobError) as refused:
        runner.Timeouts(lock, statement)
    assert said in str(refused.value)


def test_values_within_bounds_pass():
    runner.Timeouts("10min", "12h")
    runner.Timeouts("300ms", "20s")
    assert bounds.RUNNER_WAIT.check("0") == 0 and bounds.RUNNER_WAIT.check("1h") == 3600
    with pytest.raises(bounds.KnobError, match="runner_wait='61min' is past its limit of 1h"):
        bounds.RUNNER_WAIT.check("61min")


def failure_message(result) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return event.event_specific_data.error.message


def test_apply_and_revert_refuse_a_knob_past_its_bound_changing_nothing(hrms_db, database_url, tmp_path, monkeypatch):
    root = project_copy(tmp_path / "migrations")
    (root / "payroll" / "0100_note.up.sql").write_text("ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n")
    (root / "payroll" / "0100_note.down.sql").write_text("ALTER TABLE hrms.payroll_payslip DROP COLUMN note;\n")
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    result = apply_migrations.execute_in_process(
        run_config={"ops": {"plan_migrations": {"config": {"lock_timeout": "1h"}}}},
        resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success and "lock_timeout='1h' is past its limit of 10min" in failure_message(result)
    result = revert_migrations.execute_in_process(
        run_config={"ops": {"revert_to_target": {"config": {"app": "payroll", "target": "0002", "runner_wait": "1d"}}}},
        resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not result.success and "runner_wait='1d' is not a duration" in failure_message(result)
    with psycopg.connect(database_url) as conn:
        versions = {r[0] for r in conn.execute("SELECT version FROM hrms_meta.migration_ledger WHERE app = 'payroll'")}
        assert "0100" not in versions and "0003" in versions
