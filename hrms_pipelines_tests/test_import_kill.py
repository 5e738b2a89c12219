"""kill -9 in the middle of the history stage: no partial rows and no undo data survive, and a re-run
completes and can be undone."""

import os
import signal
import subprocess
import time

import psycopg
import yaml

from hrms_pipelines import settings
from hrms_pipelines.imports import sample_data


def history_backends(url: str, database: str) -> list[tuple[int, str]]:
    """Backends running (or last run) a statement only the history stage issues."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND (query ILIKE '%%stg_history%%' OR query ILIKE '%%INSERT INTO hrms.history_timelineevent%%')",
            [database],
        ).fetchall()


def test_kill_9_in_the_history_stage_leaves_nothing_and_a_rerun_completes(database_url, subprocess_env, project_root, tmp_path):
    incoming = tmp_path / "incoming"
    counts = sample_data.generate(incoming, users=400, events=60_000, seed=7)
    config = tmp_path / "import.yaml"
    config.write_text(yaml.safe_dump({"resources": {"hrms_import_options": {"config": {
        "create_users": True, "backup": False, "chunk_rows": 20_000}}}}))
    (tmp_path / "dagster_home").mkdir()
    env = {**subprocess_env, settings.HOME_ENV: str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           settings.IMPORT_DIR_ENV: str(incoming)}
    command = [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", "hrms_import", "-c", str(config)]
    database = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]

    child = subprocess.Popen(command, env=env, cwd=project_root, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr.txt").open("w"))
    try:
        deadline = time.monotonic() + 180
        while not history_backends(database_url, database):
            assert child.poll() is None, "the import ended before the history stage: " + (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "the history stage never started"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    # the server notices the dead client and rolls its transaction back
    deadline = time.monotonic() + 60
    while history_backends(database_url, database):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with psycopg.connect(database_url) as conn:
        left = {t: conn.execute(f"SELECT count(*) FROM hrms.{t}").fetchone()[0] for t in
                ("history_timelineevent", "history_compensationsnapshot", "history_senioritysnapshot")}
        history_records = conn.execute("SELECT count(*) FROM hrms.imports_importrecord WHERE stage = 'history'").fetchone()[0]
        users = conn.execute("SELECT count(*) FROM hrms.employees_employee").fetchone()[0]
        undo_kept = conn.execute(
            "SELECT (SELECT count(*) FROM hrms.imports_undoinsert WHERE table_name LIKE 'history%%') "
            "+ (SELECT count(*) FROM hrms.imports_undoupdate WHERE table_name LIKE 'history%%')").fetchone()[0]
    assert left == dict.fromkeys(left, 0)
    assert history_records == 0, "the history stage's import record was part of its rolled-back transaction"
    assert undo_kept == 0, "the change capture of the killed stage was part of its rolled-back transaction"
    assert users == counts["users"], "the stages before history committed"

    rerun = subprocess.run(command, env=env, cwd=project_root, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        events = conn.execute("SELECT count(*) FROM hrms.history_timelineevent").fetchone()[0]
        outcomes = conn.execute("SELECT stage, outcome FROM hrms.imports_importrecord WHERE stage IN ('users', 'history') ORDER BY id").fetchall()
    assert events == counts["history"]
    assert outcomes == [("users", "succeeded"), ("history", "succeeded")], "users were recognised as unchanged on the re-run"

    # the completed re-run is undoable: its history goes, the users of the first run stay
    from hrms_pipelines.imports import undo
    from hrms_pipelines.resources import RESTORER, PinnedDatabase

    with psycopg.connect(database_url) as conn:
        rerun_id = conn.execute("SELECT run_id FROM hrms.imports_importrecord WHERE stage = 'history'").fetchone()[0]
    with PinnedDatabase(location=database_url).connection(RESTORER) as conn:
        undo.undo_run(conn, rerun_id)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.history_timelineevent").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee").fetchone()[0] == counts["users"]
