"""The run queue of the real webserver + daemon: one writer at a time, queued writers wait instead of
failing, read-only runs are not held back.

Run A is a migration that blocks on an advisory lock this test holds, so it stays in progress for as
long as the test wants. While it does, a second writer (B) must stay QUEUED and a read-only run (C)
must finish. Releasing the lock lets A and then B succeed.
"""

import time

import psycopg
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]  # needs the dagster dev of the e2e package

LOCK_KEY = 4242

LAUNCH = """
mutation Launch($job: String!, $config: RunConfigData) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "hrms_pipelines", repositoryName: "__repository__", jobName: $job},
    runConfigData: $config}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def launch(ui, job: str, config: dict) -> str:
    result = ui.graphql(LAUNCH, {"job": job, "config": config})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_until(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_second_writer_waits_in_the_queue_and_a_read_only_run_does_not(dagster_ui, e2e_database_url, e2e_dirs):
    # The deployer adds a migration to the deployment's migrations folder (never run config).
    migrations = e2e_dirs["migrations"] / "queue"
    migrations.mkdir(parents=True)
    (migrations / "0001_wait_for_the_test.up.sql").write_text(
        f"-- blocks until the test releases its advisory lock\nSELECT pg_advisory_lock({LOCK_KEY});\n"
        f"SELECT pg_advisory_unlock({LOCK_KEY});\n")
    (migrations / "0001_wait_for_the_test.down.sql").write_text("SELECT 1;\n")
    apply_config = {"ops": {"plan_migrations": {"config": {"lock_timeout": "5min", "statement_timeout": "5min"}}}}

    holder = psycopg.connect(e2e_database_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        run_a = launch(dagster_ui, "apply_migrations", apply_config)
        wait_until(lambda: holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted", [LOCK_KEY]
        ).fetchone()[0] == 1, "run A to block on the test's lock")
        assert dagster_ui.run_status(run_a) == "STARTED"

        run_b = launch(dagster_ui, "apply_migrations", apply_config)
        run_c = launch(dagster_ui, "check_migrations", {})
        assert dagster_ui.wait_for_run(run_c, timeout=180) == "SUCCESS", "a read-only run is not held back"
        assert dagster_ui.run_status(run_b) == "QUEUED", "a second writer waits while the first is in progress"
        assert dagster_ui.run_status(run_a) == "STARTED"
    finally:
        holder.execute("SELECT pg_advisory_unlock_all()")
        holder.close()

    assert dagster_ui.wait_for_run(run_a, timeout=180) == "SUCCESS"
    assert dagster_ui.wait_for_run(run_b, timeout=180) == "SUCCESS", "the queued writer runs once the first is done"
    with psycopg.connect(e2e_database_url) as conn:
        ledger = conn.execute("SELECT run_id FROM hrms_meta.migration_ledger WHERE app = 'queue'").fetchall()
    assert ledger == [(run_a,)], "applied once, by the first run"
