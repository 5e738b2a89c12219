"""A run whose process dies is marked failed by the daemon's run monitoring (hrms_pipelines.run_worker).

The end-to-end test holds the `migrations` advisory lock, so a `dagster job execute` of
revert_migrations (a dry run) waits for it inside its step: a run that is STARTED and stays so. It
kills that process with SIGKILL (nothing of it can record the run's end) and waits, with a generous
bound, for the shared `dagster dev`'s daemon to mark the run FAILURE."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from dagster._core.launcher.base import WorkerStatus

from hrms_pipelines import locks, settings
from hrms_pipelines.run_worker import HOST_TAG, PID_TAG, START_TAG, host_identity, process_start, worker_status

# the shared webserver (shared_ui.py): every test of this file on its one pytest-xdist worker, in order
pytestmark = pytest.mark.xdist_group("webserver")

RUNS = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter, limit: 20) { __typename
  ... on Runs { results { runId status tags { key value } } } } }"""


def test_a_live_worker_is_running_and_a_dead_one_failed():
    me = {HOST_TAG: host_identity(), PID_TAG: str(os.getpid()), START_TAG: process_start(os.getpid())}
    assert worker_status(me).status == WorkerStatus.RUNNING
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = dict(me, **{PID_TAG: done.stdout.strip(), START_TAG: "1"})
    assert worker_status(dead).status == WorkerStatus.FAILED
    reused = dict(me, **{START_TAG: str(int(me[START_TAG]) + 1)})  # the pid now belongs to another process
    assert worker_status(reused).status == WorkerStatus.FAILED


def test_a_worker_that_cannot_be_judged_is_not_failed():
    assert worker_status({}).status == WorkerStatus.RUNNING  # not recorded yet
    elsewhere = {HOST_TAG: "ci-runner-7/another-boot", PID_TAG: "1", START_TAG: "1"}
    assert worker_status(elsewhere).status == WorkerStatus.RUNNING


def hold_migrations_lock(database_url: str) -> psycopg.Connection:
    conn = psycopg.connect(database_url, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", [locks._LOCK_CLASS, locks._key(locks.MIGRATIONS)])
    return conn


def test_a_killed_cli_run_is_marked_failed_by_run_monitoring(shared_webserver, hostile_deployment, tmp_path):
    ui = shared_webserver
    config = tmp_path / "revert.yaml"
    config.write_text("ops:\n  revert_to_target:\n    config:\n      app: payroll\n      target: '0002'\n"
                      "      dry_run: true\n      runner_wait: 30min\n")
    holder = hold_migrations_lock(hostile_deployment["database_url"])
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "hrms_pipelines", "-j", "revert_migrations",
         "-c", str(config)], env=ui.env, cwd=settings.PROJECT_ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run_id = None
        deadline = time.monotonic() + 600
        while run_id is None and time.monotonic() < deadline:  # the run records its process when its step starts
            assert process.poll() is None, "the run ended by itself: it should be waiting for the lock"
            for run in ui.graphql(RUNS, {"filter": {"pipelineName": "revert_migrations", "statuses": ["STARTED"]}}
                                  )["runsOrError"]["results"]:
                tags = {t["key"]: t["value"] for t in run["tags"]}
                if tags.get(PID_TAG) == str(process.pid):
                    run_id = run["runId"]
            time.sleep(1)
        assert run_id, "the CLI run never showed up STARTED with its process recorded"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        assert ui.run_status(run_id) == "STARTED"  # nothing of the run could record its end
        status = ui.wait_for_run(run_id, timeout=900)  # the daemon's monitoring polls every 30 s
        assert status == "FAILURE"
        events = ui.graphql("""query E($id: ID!) { logsForRun(runId: $id, limit: 500) { ... on EventConnection {
                               events { ... on MessageEvent { message } } } } }""", {"id": run_id})
        messages = "\n".join(e.get("message") or "" for e in events["logsForRun"]["events"])
        assert f"the run's process (pid {process.pid}) is gone" in messages
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        holder.close()
