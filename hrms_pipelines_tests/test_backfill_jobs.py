"""`data_backfill` as Dagster runs it: partitions, UI-default launches, run-config overrides, the
command line, unknown names, and the kill -9 reliability test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import dagster as dg
import psycopg
import pytest

from hrms_pipelines.backfills import jobs as backfill_jobs, sensors, undo
from hrms_pipelines.backfills.registry import registry
from hrms_pipelines.resources import PinnedDatabase

from .backfill_probe_defs import PROBE_TABLE_DDL, probe_job
from .conftest import _url, create_database, drop_database
from .test_backfill_engine import ListLog, add_employees

PROBE_ROWS = 2000


def step_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def test_one_partition_per_registered_backfill():
    partitions = backfill_jobs.data_backfill.partitions_def
    assert partitions.get_partition_keys() == registry.names()
    assert "set_employee_status" in backfill_jobs.data_backfill.description  # the UI's --list


def test_a_ui_launch_runs_with_the_backfills_defaults(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 6)
    with dg.instance_for_test() as instance:
        result = backfill_jobs.data_backfill.execute_in_process(
            partition_key="set_employee_status", resources={"hrms_db": hrms_db}, instance=instance)
    assert result.success
    metadata = step_metadata(result)
    assert (metadata["status"], metadata["rows_changed"], metadata["rows_left"], metadata["batches"]) == ("completed", 6, 0, 1)
    assert metadata["final_batch_size"] == 1000  # the registered default
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE status = 'active'").fetchone()[0] == 6
        assert conn.execute("SELECT run_id FROM hrms.core_backfillcheckpoint").fetchone()[0] == result.run_id


def test_run_config_overrides_for_one_run(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 9)
    run_config = {"ops": {"run_backfill": {"config": {"dry_run": True}}}}
    with dg.instance_for_test() as instance:
        dry = backfill_jobs.data_backfill.execute_in_process(
            partition_key="compute_employee_tenure", resources={"hrms_db": hrms_db}, instance=instance, run_config=run_config)
        assert step_metadata(dry)["would_change"] == 9
        run_config = {"ops": {"run_backfill": {"config": {"batch_size": 2, "sleep_seconds": 0, "adaptive": False,
                                                           "max_batches": 3}}}}
        partial = backfill_jobs.data_backfill.execute_in_process(
            partition_key="compute_employee_tenure", resources={"hrms_db": hrms_db}, instance=instance, run_config=run_config)
    assert (step_metadata(partial)["status"], step_metadata(partial)["rows_changed"]) == ("stopped", 6)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE tenure_years IS NOT NULL").fetchone()[0] == 6


def test_unknown_backfill_names_are_refused(hrms_db):
    with dg.instance_for_test() as instance:
        with pytest.raises(Exception, match="nope"):
            backfill_jobs.data_backfill.execute_in_process(partition_key="nope", resources={"hrms_db": hrms_db},
                                                           instance=instance)
        no_partition = backfill_jobs.data_backfill.execute_in_process(
            resources={"hrms_db": hrms_db}, instance=instance, raise_on_error=False)
    assert not no_partition.success
    [failure] = [e for e in no_partition.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "runs one registered backfill per partition" in failure.event_specific_data.error.message


def dagster_execute(project_root, env, *args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", *args]
    return subprocess.run(command, env=env, cwd=project_root, capture_output=True, text=True, timeout=300, **kwargs)


def test_data_backfill_from_the_command_line(database_url, subprocess_env, project_root):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 4)
    done = dagster_execute(project_root, subprocess_env, "-m", "hrms_pipelines", "-j", "data_backfill",
                           "--tags", json.dumps({"dagster/partition": "set_employee_status"}))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "backfill set_employee_status completed: 4 rows changed in 1 batches" in done.stdout + done.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status, rows_done FROM hrms.core_backfillcheckpoint").fetchone() == ("completed", 4)


def probe_state(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT count(*), sum(counter), max(counter), min(counter),
                      md5(string_agg(id || ':' || counter, ',' ORDER BY id)) FROM hrms.backfill_probe""").fetchone()


def make_probe(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PROBE_TABLE_DDL)
        conn.execute("INSERT INTO hrms.backfill_probe (id) SELECT n * 3 FROM generate_series(1, %s) n", [PROBE_ROWS])


@pytest.mark.slow
def test_kill_9_mid_backfill_then_relaunch_equals_an_uninterrupted_run(database_url, pg_admin_url, migrated_template,
                                                                       subprocess_env, project_root):
    make_probe(database_url)
    untouched = probe_state(database_url)
    tags = json.dumps({"dagster/partition": "increment_probe"})
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-f",
               str(project_root / "hrms_pipelines_tests/backfill_probe_defs.py"), "-j", "data_backfill", "--tags", tags]
    # Its own session, so the kill takes the whole process group it may have started.
    victim = subprocess.Popen(command, env=subprocess_env, cwd=project_root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 240
            rows_done = 0
            while rows_done < PROBE_ROWS // 4:
                assert victim.poll() is None, "the backfill ended before it could be killed"
                assert time.monotonic() < deadline, "the backfill did not start"
                time.sleep(0.1)
                row = conn.execute("SELECT rows_done FROM hrms.core_backfillcheckpoint WHERE name = 'increment_probe'").fetchone()
                rows_done = row[0] if row else 0
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL

    with psycopg.connect(database_url, autocommit=True) as conn:
        # wait until the server has seen the client go (its backend ends, the open batch rolls back)
        for _ in range(100):
            if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()[0]:
                break
            time.sleep(0.1)
        status, last_key, rows_done = conn.execute(
            "SELECT status, last_key, rows_done FROM hrms.core_backfillcheckpoint WHERE name = 'increment_probe'").fetchone()
        incremented = conn.execute(
            "SELECT count(*), coalesce(max(id), 0), max(counter) FROM hrms.backfill_probe WHERE counter > 0").fetchone()
    # Mid-way, and the checkpoint matches the data exactly: every committed batch, nothing else.
    assert status == "running"
    assert 0 < rows_done < PROBE_ROWS
    assert incremented == (rows_done, last_key, 1)
    # What the backfill sensors do once Dagster marks the killed run failed: the checkpoint says so.
    with psycopg.connect(database_url) as conn:
        killed_run = conn.execute("SELECT run_id FROM hrms.core_backfillcheckpoint WHERE name = 'increment_probe'").fetchone()[0]
    assert sensors.mark_interrupted(PinnedDatabase(location=database_url), killed_run, "FAILURE") == ["increment_probe"]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status, last_key FROM hrms.core_backfillcheckpoint WHERE name = 'increment_probe'"
                            ).fetchone() == ("interrupted", last_key)

    relaunch = dagster_execute(project_root, subprocess_env, "-f", str(project_root / "hrms_pipelines_tests/backfill_probe_defs.py"),
                               "-j", "data_backfill", "--tags", tags)
    assert relaunch.returncode == 0, relaunch.stdout[-3000:] + relaunch.stderr[-3000:]
    assert f"after key {last_key:,}" in relaunch.stdout + relaunch.stderr

    # The same backfill uninterrupted, on a fresh copy of the same data.
    reference = create_database(pg_admin_url, template=migrated_template)
    try:
        reference_url = _url(pg_admin_url, reference)
        make_probe(reference_url)
        with dg.instance_for_test() as instance:
            assert probe_job.execute_in_process(
                partition_key="increment_probe", instance=instance, resources={"hrms_db": PinnedDatabase(location=reference_url)},
                run_config={"ops": {"run_backfill": {"config": {"sleep_seconds": 0}}}}).success
        assert probe_state(database_url) == probe_state(reference_url)
    finally:
        drop_database(pg_admin_url, reference)

    count, total, highest, lowest, _ = probe_state(database_url)
    assert (count, total, highest, lowest) == (PROBE_ROWS, PROBE_ROWS, 1, 1)  # no batch ran twice, none was skipped
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status, rows_done FROM hrms.core_backfillcheckpoint WHERE name = 'increment_probe'"
                            ).fetchone() == ("completed", PROBE_ROWS)
        # the audit log's batch ranges cover every row exactly once
        ranges = conn.execute("""SELECT (after->>'first_key')::bigint, (after->>'last_key')::bigint,
                                        (after->>'rows_changed')::int FROM hrms.core_auditlog
                                 WHERE source = 'backfill:increment_probe' ORDER BY 1""").fetchall()
    assert sum(r[2] for r in ranges) == PROBE_ROWS
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))

    # Undone, the killed run and its relaunch put back exactly the table they started from: the
    # killed run kept the previous values of its committed batches, and of nothing else.
    report = undo.undo(PinnedDatabase(location=database_url), backfill="increment_probe", log=ListLog(),
                       options=undo.DEFAULTS.override(sleep_seconds=0))
    assert [r.restored for r in report.runs] == [PROBE_ROWS - rows_done, rows_done]
    assert probe_state(database_url) == untouched


def test_a_killed_runs_checkpoint_reads_interrupted_once_dagster_marks_the_run_failed(hrms_db, database_url):
    """The run failed without its checkpoint saying so (what a kill -9 leaves: 'running'); the failure
    sensor sets that checkpoint, and only that one, to 'interrupted'; a second evaluation changes nothing."""
    with dg.instance_for_test() as instance:
        failed = backfill_jobs.field_backfill.execute_in_process(
            run_config={"ops": {"run_field_backfill": {"config": {
                "table": "core_auditlog", "column": "action", "value": "x", "sleep_seconds": 0}}}},
            resources={"hrms_db": hrms_db}, instance=instance, raise_on_error=False, tags={"test": "killed"})
        with psycopg.connect(database_url, autocommit=True) as conn:  # as the killed process left them
            conn.execute("""INSERT INTO hrms.core_backfillcheckpoint (name, status, params, run_id, last_key)
                            VALUES ('killed_one', 'running', '{}', %s, 42), ('other_run', 'running', '{}', 'another-run', 7)""",
                         [failed.run_id])
        assert not failed.success
        context = dg.build_run_status_sensor_context(
            sensor_name="backfill_interrupted_on_failure", dagster_instance=instance, dagster_run=failed.dagster_run,
            dagster_event=failed.get_run_failure_event(), resources={"hrms_db": hrms_db}).for_run_failure()
        sensors.backfill_interrupted_on_failure(context)
        sensors.backfill_interrupted_on_failure(context)
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT name, (status, last_key, params->'interrupted'->>'run_status')::text "
                                 "FROM hrms.core_backfillcheckpoint WHERE name IN ('killed_one', 'other_run')").fetchall())
    assert rows == {"killed_one": "(interrupted,42,FAILURE)", "other_run": "(running,7,)"}


@pytest.mark.parametrize(("job", "run_config", "limit"), [
    (backfill_jobs.data_backfill, {"ops": {"run_backfill": {"config": {"sleep_seconds": 86_400}}}},
     "sleep_seconds must be between 0 and 60 (got 86400"),
    (backfill_jobs.field_backfill, {"ops": {"run_field_backfill": {"config": {
        "table": "employees_employee", "column": "status", "value": "active", "max_runtime_seconds": 86_400}}}},
     "max_runtime_seconds must be between 1 and 43,200 (got 86400"),
    (backfill_jobs.undo_backfill, {"ops": {"run_undo": {"config": {"backfill": "set_employee_status",
                                                                    "lock_timeout": "1h"}}}},
     "lock_timeout must be between 0.001 s and 60 s (got 1h)"),
])
def test_a_knob_past_its_bound_is_refused_at_launch_naming_the_limit(hrms_db, database_url, job, run_config, limit):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 3)
    kwargs = {"partition_key": "set_employee_status"} if job is backfill_jobs.data_backfill else {}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=run_config, resources={"hrms_db": hrms_db}, instance=instance,
                                        raise_on_error=False, **kwargs)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert limit in failure.event_specific_data.error.message
    with psycopg.connect(database_url) as conn:  # refused before anything ran
        assert conn.execute("SELECT count(*) FROM hrms.core_backfillcheckpoint").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE status IS NOT NULL").fetchone()[0] == 0
