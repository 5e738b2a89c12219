"""The production dagster.yaml variant: plain dagster-postgres storage, runs in their own process."""

import shutil
import subprocess
import sys

import psycopg
import yaml

from hrms_pipelines import settings


def test_production_instance_config_runs_a_job_and_stores_it_in_postgres(
    subprocess_env, project_root, tmp_path, dagster_storage_url
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(project_root / "deploy" / "dagster.production.yaml", home / "dagster.yaml")
    env = dict(subprocess_env, DAGSTER_HOME=str(home))
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "hrms_pipelines", "-j", "check_migrations"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    storage = dagster_storage_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(storage) as conn:
        statuses = conn.execute("SELECT status FROM runs WHERE pipeline_name = 'check_migrations'").fetchall()
    assert ("SUCCESS",) in statuses


def test_every_instance_config_keeps_one_writer_at_a_time(project_root):
    for path in [project_root / "dagster.yaml", *sorted((project_root / "deploy").glob("dagster.*.yaml"))]:
        config = yaml.safe_load(path.read_text())
        assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}, path
        assert config["run_coordinator"]["class"] == "QueuedRunCoordinator", path


def test_every_writer_step_is_in_the_writer_pool():
    from hrms_pipelines.definitions import defs

    writers = {
        "apply_migrations": "apply_planned_migrations",
        "revert_migrations": "revert_to_target",
    }
    for job_name, op_name in writers.items():
        node = defs.resolve_job_def(job_name).graph.node_named(op_name)
        assert node.definition.pool == settings.WRITER_POOL, f"{job_name}.{op_name}"
