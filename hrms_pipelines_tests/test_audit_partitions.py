"""Monthly partitions of the audit log: computed from catalogue bounds, attached without an ACCESS
EXCLUSIVE lock on the parent, default-partition rows moved, retries, the advisory lock, retention."""

import json
import subprocess
from contextlib import nullcontext
from datetime import date, datetime
from unittest import mock

import dagster as dg
import psycopg
import pytest

from hrms_pipelines import audit_partitions as ap
from hrms_pipelines import locks, settings


def run(hrms_db, today: str | None = None, **config):
    """The asset and its check, on the day `today` (the database's clock, as a real run reads it)."""
    clock = mock.patch.object(ap, "database_today", lambda _conn: date.fromisoformat(today)) if today else nullcontext()
    with clock:
        return dg.materialize(
            [ap.core_auditlog_partitions, ap.audit_log_default_partition_empty],
            resources={"hrms_db": hrms_db},
            run_config={"ops": {ap.ASSET: {"config": {"retry_wait_seconds": 0.05, **config}}}},
            raise_on_error=False,
        )


def partitions(url):
    """{name: (from, to)} as dates in the session time zone, read from the catalogue."""
    with psycopg.connect(url) as conn:
        layout = ap.read_layout(conn)
    return {r.name: (f"{r.lower:%Y-%m-%d}", f"{r.upper:%Y-%m-%d}") for r in layout.ranges}


def check_passed(result) -> bool:
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation.passed


def test_december_to_january(hrms_db, database_url):
    result = run(hrms_db, today="2030-12-31")
    assert result.success
    found = partitions(database_url)
    assert found["core_auditlog_y2030m12"] == ("2030-12-01", "2031-01-01")
    assert found["core_auditlog_y2031m01"] == ("2031-01-01", "2031-02-01")
    assert found["core_auditlog_y2031m02"] == ("2031-02-01", "2031-03-01")
    assert found["core_auditlog_y2031m03"] == ("2031-03-01", "2031-04-01")
    assert "core_auditlog_y2031m04" not in found
    [materialization] = result.asset_materializations_for_node(ap.ASSET)
    assert materialization.metadata["created"].value == 4
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (created_at, source, action, table_name) "
                     "VALUES ('2030-12-31 23:59:59.999', 't', 'insert', 't'), ('2031-01-01 00:00', 't', 'insert', 't')")
        placed = conn.execute("SELECT tableoid::regclass::text FROM hrms.core_auditlog WHERE source = 't' ORDER BY created_at").fetchall()
    assert [p for (p,) in placed] == ["hrms.core_auditlog_y2030m12", "hrms.core_auditlog_y2031m01"]


def test_second_run_creates_nothing_and_bounds_not_names_decide(hrms_db, database_url):
    assert run(hrms_db, today="2031-05-10").success
    before = partitions(database_url)
    # A partition with an unexpected name that covers a month counts as that month.
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE hrms.audit_archive_sep PARTITION OF hrms.core_auditlog "
                     "FOR VALUES FROM ('2031-09-01') TO ('2031-10-01')")
    result = run(hrms_db, today="2031-05-10", months_ahead=4)
    assert result.success
    after = partitions(database_url)
    assert set(after) - set(before) == {"audit_archive_sep"}
    [materialization] = result.asset_materializations_for_node(ap.ASSET)
    assert materialization.metadata["created"].value == 0


def test_attach_skips_the_scan_and_keeps_indexes(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        notices = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        conn.execute("SET client_min_messages = debug1")
        outcome = ap.maintain(conn, ap.AuditPartitionsConfig(months_ahead=0), log=lambda _m: None, today=date(2032, 2, 10))
        assert outcome.created == ["core_auditlog_y2032m02"]
        indexes = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'hrms.core_auditlog_y2032m02'::regclass").fetchone()[0]
        parent_indexes = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'hrms.core_auditlog'::regclass").fetchone()[0]
        leftover_checks = conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'hrms.core_auditlog_y2032m02'::regclass "
                                       "AND conname LIKE '%bounds'").fetchone()[0]
    assert any("core_auditlog_y2032m02" in n and "implied by existing constraints" in n for n in notices), notices
    assert indexes == parent_indexes == 4
    assert leftover_checks == 0


def test_attach_goes_ahead_while_a_writer_holds_the_audit_log(hrms_db, database_url):
    """An open transaction writing to (and reading this month of) the audit log does not stop the
    attach: no ACCESS EXCLUSIVE lock on the parent. (The default partition is locked for the attach;
    a query that scans it would wait for that moment.)"""
    with psycopg.connect(database_url) as writer:
        writer.execute("INSERT INTO hrms.core_auditlog (source, action, table_name) VALUES ('w', 'insert', 't')")
        this_month, next_month = writer.execute(
            "SELECT date_trunc('month', now()), date_trunc('month', now()) + interval '1 month'").fetchone()
        # Constant bounds: the planner prunes to this month's partition and locks only that one.
        writer.execute("SELECT count(*) FROM hrms.core_auditlog WHERE created_at >= %s AND created_at < %s",
                       [this_month, next_month])
        result = run(hrms_db, today="2033-07-01", months_ahead=1, lock_timeout="500ms", attempts=1)
        writer.rollback()
    assert result.success
    assert "core_auditlog_y2033m08" in partitions(database_url)


def test_rows_in_the_default_partition_fail_the_check_and_are_moved_into_their_month(hrms_db, database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (created_at, source, action, table_name, row_key) "
                     "SELECT '2034-03-01'::timestamptz + make_interval(hours => g), 'late', 'insert', 't', g::text "
                     "FROM generate_series(1, 30) g")
        assert conn.execute("SELECT count(*) FROM hrms.core_auditlog_default").fetchone()[0] == 30
    first = dg.materialize([ap.audit_log_default_partition_empty], resources={"hrms_db": hrms_db},
                           selection=dg.AssetSelection.checks_for_assets(ap.ASSET))
    [evaluation] = first.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["rows"].value == 30
    assert "2034-03" in evaluation.metadata["rows_by_month"].value

    result = run(hrms_db, today="2034-02-15", months_ahead=1)
    assert result.success and check_passed(result)
    [materialization] = result.asset_materializations_for_node(ap.ASSET)
    assert materialization.metadata["moved_from_default"].value == 30
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.core_auditlog_default").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM hrms.core_auditlog_y2034m03 WHERE source = 'late'").fetchone()[0] == 30
    assert "core_auditlog_default" in [n for n in _all_partitions(database_url)]


def test_move_can_be_turned_off_then_the_month_is_reported_and_skipped(hrms_db, database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (created_at, source, action, table_name) VALUES ('2035-06-10', 'x', 'insert', 't')")
    result = run(hrms_db, today="2035-05-15", months_ahead=2, move_default_rows=False)
    assert not result.success
    message = result.failure_data_for_node(ap.ASSET).error.message
    assert "1 row(s) of 2035-06 are in the default partition" in message
    found = partitions(database_url)
    assert "core_auditlog_y2035m05" in found and "core_auditlog_y2035m07" in found
    assert "core_auditlog_y2035m06" not in found


def test_lock_timeout_is_retried_then_reported(hrms_db, database_url):
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE hrms.core_auditlog IN SHARE UPDATE EXCLUSIVE MODE")
        result = run(hrms_db, today="2036-01-01", months_ahead=0, lock_timeout="50ms", attempts=3)
        blocker.rollback()
    assert not result.success
    message = result.failure_data_for_node(ap.ASSET).error.message
    assert "attach 2036-01: the lock was not granted within lock_timeout 50ms in 3 attempt(s)" in message
    assert "core_auditlog_y2036m01" not in partitions(database_url)
    assert "2036-01" not in str(_all_partitions(database_url))
    assert run(hrms_db, today="2036-01-01", months_ahead=0).success  # and the next run does it


def test_two_runs_do_not_race(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as other:
        with locks.session_lock(other, locks.AUDIT_PARTITIONS):
            result = run(hrms_db, today="2037-01-01")
    assert not result.success
    assert "another run holds the 'audit_partitions' lock" in result.failure_data_for_node(ap.ASSET).error.message


def test_retention_detaches_old_months_only_when_configured_and_never_drops(hrms_db, database_url, monkeypatch):
    assert run(hrms_db, today="2038-01-01", months_ahead=2).success
    assert run(hrms_db, today="2038-05-01", months_ahead=0).success
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO hrms.core_auditlog (created_at, source, action, table_name) VALUES ('2038-01-05', 'old', 'insert', 't')")
    assert {"core_auditlog_y2038m01", "core_auditlog_y2038m02"} <= set(partitions(database_url))  # off by default
    # retention is deployment configuration, never run config
    with pytest.raises(dg.DagsterInvalidConfigError, match='unexpected config entry "detach_older_than_months"'):
        run(hrms_db, today="2038-05-01", months_ahead=0, detach_older_than_months=3)
    monkeypatch.setenv(settings.AUDIT_DETACH_AFTER_MONTHS_ENV, "3")
    preview = run(hrms_db, today="2038-05-01", months_ahead=0, dry_run=True)
    assert preview.success and "core_auditlog_y2038m01" in partitions(database_url)
    attached = set(partitions(database_url))
    result = run(hrms_db, today="2038-05-01", months_ahead=0)
    assert result.success
    found = partitions(database_url)
    assert "core_auditlog_y2038m01" not in found  # ended 2038-02-01 <= 2038-02-01 cutoff
    assert "core_auditlog_y2038m02" in found
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.core_auditlog_y2038m01 WHERE source = 'old'").fetchone()[0] == 1
        # the detach wrote its audit row (in the same transaction, before the detach)
        detached = conn.execute("SELECT row_key, after->>'retention_months' FROM hrms.core_auditlog "
                                "WHERE action = 'detach'").fetchall()
    assert ("core_auditlog_y2038m01", "3") in detached
    # one audit row per detached month (the faked clock also detaches this real month, whose table
    # then holds its own detach row: a real clock never detaches the month it writes into)
    assert {name for name, _ in detached} | {f"core_auditlog_y{date.today():%Y}m{date.today():%m}"} >= attached - set(found)


def test_today_is_for_dry_runs_only(hrms_db, database_url):
    before = partitions(database_url)
    result = dg.materialize([ap.core_auditlog_partitions], resources={"hrms_db": hrms_db}, raise_on_error=False,
                            run_config={"ops": {ap.ASSET: {"config": {"today": "2041-03-01", "months_ahead": 0}}}})
    assert not result.success
    assert "`today` is for dry runs only" in result.failure_data_for_node(ap.ASSET).error.message
    preview = dg.materialize([ap.core_auditlog_partitions], resources={"hrms_db": hrms_db},
                             run_config={"ops": {ap.ASSET: {"config": {"today": "2041-03-01", "months_ahead": 0,
                                                                       "dry_run": True}}}})
    [materialization] = preview.asset_materializations_for_node(ap.ASSET)
    assert materialization.metadata["created_partitions"].value == "core_auditlog_y2041m03"
    assert partitions(database_url) == before


def test_months_ahead_check_reports_missing_months(hrms_db, database_url):
    with psycopg.connect(database_url) as conn:
        last = max(ap.read_layout(conn).ranges, key=lambda r: r.upper)
        conn.execute(f"ALTER TABLE hrms.core_auditlog DETACH PARTITION hrms.{last.name}")
    result = dg.materialize([ap.audit_log_months_ahead_covered], resources={"hrms_db": hrms_db},
                            selection=dg.AssetSelection.checks_for_assets(ap.ASSET))
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and f"{last.lower:%Y-%m}" in evaluation.metadata["missing_months"].value
    # The detached table still has the month's name: the job will not guess, it says so.
    refused = run(hrms_db)
    assert not refused.success
    assert f"a table hrms.{last.name} exists but is not the partition of {last.lower:%Y-%m}" in (
        refused.failure_data_for_node(ap.ASSET).error.message)
    with psycopg.connect(database_url) as conn:
        conn.execute(f"ALTER TABLE hrms.{last.name} RENAME TO {last.name}_old")
    assert run(hrms_db).success
    result = dg.materialize([ap.audit_log_months_ahead_covered], resources={"hrms_db": hrms_db},
                            selection=dg.AssetSelection.checks_for_assets(ap.ASSET))
    assert result.get_asset_check_evaluations()[0].passed


def test_schedule_targets_the_job_daily():
    assert ap.audit_log_partitions_daily.job_name == ap.JOB
    assert ap.audit_log_partitions_daily.cron_schedule == "17 3 * * *"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2030, 12, 31, 3, 17))
    [request] = list(ap.audit_log_partitions_daily.evaluate_tick(context).run_requests)
    assert request.run_config == {}


def test_job_through_the_cli(subprocess_env, project_root, database_url, tmp_path):
    config = tmp_path / "partitions.yaml"
    config.write_text(json.dumps({"ops": {ap.ASSET: {"config": {"months_ahead": 1}}}}))
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", ap.JOB, "-c", str(config)]
    result = subprocess.run(command, env=subprocess_env, cwd=project_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        next_month = conn.execute("SELECT to_char(date_trunc('month', current_date) + interval '1 month', 'YYYY\"m\"MM')").fetchone()[0]
    assert f"core_auditlog_y{next_month}" in partitions(database_url)


def _all_partitions(url):
    with psycopg.connect(url) as conn:
        return [n for (n,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'hrms.core_auditlog'::regclass").fetchall()]


@pytest.mark.parametrize("bad", [{"months_ahead": -1}, {"attempts": 0}])
def test_nonsense_settings_are_refused(hrms_db, bad):
    result = run(hrms_db, **bad)
    assert not result.success
