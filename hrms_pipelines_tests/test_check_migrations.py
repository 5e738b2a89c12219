"""The check_migrations job (in process and through `dagster job execute`) and the migration files
sensor (new, changed, unchanged, deleted files)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import yaml

from hrms_pipelines import settings
from hrms_pipelines.migrations.check_job import check_migrations
from hrms_pipelines.migrations.sensors import migration_files_sensor
from hrms_pipelines.resources import PinnedDatabase

GOOD = {
    "shop/0001_init.up.sql": "CREATE TABLE public.shop_order (id bigint PRIMARY KEY, status text);\n",
    "shop/0001_init.down.sql": "DROP TABLE public.shop_order;\n",
}
DANGEROUS = {
    "shop/0002_drop.up.sql": "SELECT 1;\nALTER TABLE public.shop_order DROP COLUMN status;\n",
    "shop/0002_drop.down.sql": "ALTER TABLE public.shop_order ADD COLUMN status text;\n",
}


def write(root: Path, spec: dict[str, str]) -> Path:
    for name, text in spec.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run_config(**config) -> dict:
    return {"ops": {"check_migration_files": {"config": config}}}


def test_job_in_process_metadata_and_failure(tmp_path, monkeypatch):
    root = write(tmp_path, GOOD)
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    unused_db = PinnedDatabase(location="postgresql://unused@127.0.0.1:1/none")  # never connected without live_sizes
    result = check_migrations.execute_in_process(run_config=run_config(), resources={"hrms_db": unused_db})
    assert result.success
    write(root, DANGEROUS)
    with dg.instance_for_test() as instance:
        result = check_migrations.execute_in_process(run_config=run_config(json=True),
                                                     resources={"hrms_db": unused_db}, instance=instance,
                                                     raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "0002_drop.up.sql:2:1: DANGER ban-drop-column" in failure.event_specific_data.error.message
        metadata = failure.step_failure_data.user_failure_data.metadata
        assert metadata["danger"].value == 1
        assert "| ban-drop-column |" in metadata["findings"].value
        assert metadata["findings_json"].value[0]["rule"] == "ban-drop-column"
        # the findings are in the run log too: as text, and (json: true) as JSON
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
        assert any("DANGER ban-drop-column" in m and "fix:" in m for m in messages)
        assert any(m.startswith("{") and json.loads(m)["findings"][0]["rule"] == "ban-drop-column" for m in messages)


def test_job_strict_and_app(tmp_path, monkeypatch):
    root = write(tmp_path, {**GOOD, "shop/0002_idx.up.sql": "CREATE INDEX i ON public.shop_order (status);\n",
                            "shop/0002_idx.down.sql": "DROP INDEX public.i;\n",
                            "misc/0001_x.up.sql": "SELECT 1;\n", "misc/0001_x.down.sql": "SELECT 1;\n"})
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    db = PinnedDatabase(location="postgresql://unused@127.0.0.1:1/none")
    assert check_migrations.execute_in_process(run_config=run_config(), resources={"hrms_db": db}).success
    strict = check_migrations.execute_in_process(run_config=run_config(strict=True),
                                                 resources={"hrms_db": db}, raise_on_error=False)
    assert not strict.success
    other_app = check_migrations.execute_in_process(run_config=run_config(strict=True, app="misc"),
                                                    resources={"hrms_db": db})
    assert other_app.success


def _execute(project_root, env, config: dict, tmp_path) -> subprocess.CompletedProcess:
    config_file = tmp_path / "check.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", "check_migrations",
         "-c", str(config_file)],
        env=env, cwd=project_root, capture_output=True, text=True, timeout=300,
    )


def test_dagster_job_execute_exit_status(project_root, subprocess_env, tmp_path):
    root = write(tmp_path / "migrations", GOOD)
    env = {**subprocess_env, settings.MIGRATIONS_DIR_ENV: str(root)}
    ok = _execute(project_root, env, {"ops": {"check_migration_files": {"config": {"strict": True}}}}, tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    write(root, DANGEROUS)
    failing = _execute(project_root, env, {"ops": {"check_migration_files": {"config": {}}}}, tmp_path)
    assert failing.returncode != 0
    assert "ban-drop-column" in failing.stdout + failing.stderr


def _context(instance, cursor=None):
    return dg.build_sensor_context(instance=instance, cursor=cursor)


def test_sensor_new_changed_unchanged_deleted(tmp_path, monkeypatch):
    root = write(tmp_path, GOOD)
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    with dg.instance_for_test() as instance:
        # first evaluation: every file is new
        ctx = _context(instance)
        first = migration_files_sensor(ctx)
        assert isinstance(first, dg.RunRequest)
        assert sorted(Path(p).name for p in first.run_config["ops"]["check_migration_files"]["config"]["paths"]) == [
            "0001_init.down.sql", "0001_init.up.sql"]
        cursor = ctx.cursor
        assert set(json.loads(cursor)) == {"shop/0001_init.up.sql", "shop/0001_init.down.sql"}

        # nothing changed: skip, with a reason
        ctx = _context(instance, cursor)
        skipped = migration_files_sensor(ctx)
        assert isinstance(skipped, dg.SkipReason) and "no new or changed" in skipped.skip_message

        # a new file: only it is checked
        write(root, {"shop/0002_drop.up.sql": DANGEROUS["shop/0002_drop.up.sql"]})
        ctx = _context(instance, cursor)
        new = migration_files_sensor(ctx)
        assert [Path(p).name for p in new.run_config["ops"]["check_migration_files"]["config"]["paths"]] == ["0002_drop.up.sql"]
        cursor = ctx.cursor

        # a changed file (content, not time): checked, with a different run key than before
        (root / "shop/0002_drop.up.sql").write_text("SELECT 2;\n")
        ctx = _context(instance, cursor)
        changed = migration_files_sensor(ctx)
        assert [Path(p).name for p in changed.run_config["ops"]["check_migration_files"]["config"]["paths"]] == ["0002_drop.up.sql"]
        assert changed.run_key != new.run_key
        cursor = ctx.cursor
        (root / "shop/0002_drop.up.sql").touch()  # same content
        assert isinstance(migration_files_sensor(_context(instance, cursor)), dg.SkipReason)

        # a deleted up file: only the cursor moves
        (root / "shop/0002_drop.up.sql").unlink()
        ctx = _context(instance, cursor)
        deleted = migration_files_sensor(ctx)
        assert isinstance(deleted, dg.SkipReason) and "shop/0002_drop.up.sql" in deleted.skip_message
        assert "shop/0002_drop.up.sql" not in json.loads(ctx.cursor)
        cursor = ctx.cursor

        # a deleted down file makes its migration irreversible: the up file is checked again
        (root / "shop/0001_init.down.sql").unlink()
        ctx = _context(instance, cursor)
        request = migration_files_sensor(ctx)
        assert [Path(p).name for p in request.run_config["ops"]["check_migration_files"]["config"]["paths"]] == ["0001_init.up.sql"]


def test_sensor_run_request_runs_the_job(tmp_path, monkeypatch):
    root = write(tmp_path, {**GOOD, **DANGEROUS})
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    with dg.instance_for_test() as instance:
        request = migration_files_sensor(_context(instance))
        result = check_migrations.execute_in_process(
            run_config=request.run_config, instance=instance, raise_on_error=False,
            resources={"hrms_db": PinnedDatabase(location="postgresql://unused@127.0.0.1:1/none")})
        assert not result.success  # 0002_drop drops a column


def test_sensor_starts_running():
    assert migration_files_sensor.default_status == dg.DefaultSensorStatus.RUNNING
