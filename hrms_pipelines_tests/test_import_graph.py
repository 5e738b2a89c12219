"""The whole import graph on the sample company, through Dagster: materialize, checks, re-import,
dry run, the nightly schedule, and `dagster job execute` in a subprocess."""

import subprocess

import dagster as dg
import psycopg

from hrms_pipelines.imports import assets, checks, options as import_options, schedules
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines import settings
from hrms_pipelines.resources import RESTORER
from hrms_pipelines_tests.import_helpers import import_folder

SAMPLE = settings.PROJECT_ROOT / "seeds" / "sample"
TABLES = [
    "ladders_ladder", "ladders_aspect", "ladders_level", "org_organization", "org_department", "org_tribe",
    "org_chapter", "org_team", "employees_employee", "history_timelineevent", "history_compensationsnapshot",
    "history_senioritysnapshot", "imports_importrecord", "core_auditlog",
]


def checksums(url: str) -> dict[str, str]:
    """md5 of every imported table's full contents, ordered: equal means unchanged."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM hrms.{t} x").fetchone()[0]
                for t in TABLES}


def materialize(hrms_db, tmp_path, import_dir=SAMPLE, **config):
    """The import graph over the files of `import_dir` (the deployment's import folder for the run)."""
    opts = {"create_users": True, **config}
    with import_folder(import_dir):
        return dg.materialize(
            [*assets.import_assets, *checks.import_checks],
            resources={"hrms_db": hrms_db, import_options.RESOURCE_KEY: ImportOptions(**opts)},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )


def counts(url):
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM hrms.{t}").fetchone()[0] for t in
                ("employees_employee", "org_team", "org_tribe", "org_chapter", "history_timelineevent",
                 "history_compensationsnapshot", "history_senioritysnapshot", "ladders_level")}


def test_sample_imports_whole_and_reimport_changes_nothing(hrms_db, database_url, tmp_path):
    result = materialize(hrms_db, tmp_path)
    assert result.success
    assert counts(database_url) == {
        "employees_employee": 200, "org_team": 10, "org_tribe": 4, "org_chapter": 5, "history_timelineevent": 2000,
        "history_compensationsnapshot": counts(database_url)["history_compensationsnapshot"],
        "history_senioritysnapshot": counts(database_url)["history_senioritysnapshot"], "ladders_level": 16,
    }
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"backup_ladders", "import_ladders", "backup_org", "import_org",
                            "backup_users", "import_users", "backup_history", "import_history"}
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(checks.CHECK_NAMES)
    assert evaluations["duplicate_emails"].passed and evaluations["events_without_users"].passed
    # the checks report what each stage validated inside its transaction, over the rows it changed: once
    scope = evaluations["events_without_users"].metadata["scope"].value
    assert "rows this stage inserted or updated" in scope and "inside the stage's transaction" in scope
    history = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "import_history")
    metadata = history.materialization.metadata
    assert metadata["inserted"].value == 2000 and metadata["changed_timeline_events"].value == 2000
    assert metadata["changed_users"].value == 0, "the history stage changed no user"
    # the table sizes are PostgreSQL's estimates (pg_class), never a count(*): present once analyzed
    assert "count_timeline_events" not in metadata and "rows stored (estimate, pg_class)" in metadata["summary"].value
    users = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "import_users")
    assert users.materialization.metadata["changed_users"].value >= 200
    with psycopg.connect(database_url) as conn:
        placeholders = conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE is_placeholder").fetchone()[0]
        summary = conn.execute(
            "SELECT summary FROM hrms.history_timelineevent WHERE event_type = 'promotion' ORDER BY id LIMIT 1").fetchone()[0]
        untagged = conn.execute("SELECT count(*) FROM hrms.history_timelineevent WHERE import_record_id IS NULL").fetchone()[0]
        backups_made = sorted(p.name for p in settings.backup_dir().iterdir()) if settings.backup_dir().exists() else []
        kept = conn.execute("SELECT (SELECT count(*) FROM hrms.imports_undoinsert), (SELECT count(*) FROM hrms.imports_undoupdate)").fetchone()
    assert placeholders == 0, "the users stage completes the leaders the org stage created"
    assert summary.startswith("Promoted to L2 ") and ", pay band P2, salary GHS " in summary and "(+" in summary
    assert untagged == 0
    assert backups_made == [], "no full backup unless the run asks for one (full_backup)"
    assert kept[0] > 0, "each stage recorded the keys it inserted, for undo"
    backup_meta = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "backup_history")
    assert backup_meta.materialization.metadata["full_backup"].value is False

    before = checksums(database_url)
    again = materialize(hrms_db, tmp_path)
    assert again.success
    assert checksums(database_url) == before
    outcomes = {e.asset_key.path[-1]: e.materialization.metadata.get("outcome") for e in again.get_asset_materialization_events()
                if e.asset_key.path[-1].startswith("import_")}
    assert {k: v.value for k, v in outcomes.items()} == dict.fromkeys(
        ["import_ladders", "import_org", "import_users", "import_history"], "unchanged")
    again_checks = {e.check_name: e for e in again.get_asset_check_evaluations()}
    assert all(e.passed for e in again_checks.values())
    assert again_checks["duplicate_emails"].metadata["scope"].value.startswith("nothing")


def test_dry_run_changes_nothing_and_materializes_nothing(hrms_db, database_url, tmp_path):
    before = checksums(database_url)
    result = materialize(hrms_db, tmp_path, dry_run=True)
    assert result.success
    assert checksums(database_url) == before
    assert result.get_asset_materialization_events() == []
    assert not settings.backup_dir().exists() or not any(settings.backup_dir().iterdir())
    observations = {e.asset_key.path[-1]: e.event_specific_data.asset_observation.metadata
                    for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
    assert observations["import_history"]["inserted"].value == 2000
    # 15 of the 200 users are leaders the org stage created as placeholders: completed, not inserted
    assert observations["import_users"]["inserted"].value == 185
    assert observations["import_users"]["updated"].value == 15


def test_dagster_job_execute_with_the_example_configs(subprocess_env, database_url, project_root, tmp_path):
    (tmp_path / "dagster_home").mkdir()
    env = {**subprocess_env, settings.BACKUP_DIR_ENV: str(settings.backup_dir()), settings.HOME_ENV: str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}

    def execute(config):
        return subprocess.run([str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines",
                               "-j", "hrms_import", "-c", config], env=env, cwd=project_root, capture_output=True, text=True)

    before = checksums(database_url)
    dry = execute("config/hrms_import_dry_run.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert checksums(database_url) == before
    assert not settings.backup_dir().exists() or not any(settings.backup_dir().iterdir())
    real = execute("config/hrms_import.yaml")
    assert real.returncode == 0, real.stderr[-3000:]
    assert counts(database_url)["history_timelineevent"] == 2000
    with psycopg.connect(database_url) as conn:
        outcomes = conn.execute("SELECT stage, outcome, count(*) FROM hrms.imports_importrecord GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    assert outcomes == [("history", "succeeded", 1), ("ladders", "succeeded", 1), ("org", "succeeded", 5), ("users", "succeeded", 1)]


def test_nightly_schedule_skips_when_no_file_changed(hrms_db, database_url, tmp_path, monkeypatch):
    import shutil

    incoming = tmp_path / "incoming"
    shutil.copytree(SAMPLE, incoming)
    monkeypatch.setenv(settings.IMPORT_DIR_ENV, str(incoming))
    with dg.build_schedule_context(resources={"hrms_db": hrms_db}) as context:
        first = schedules.hrms_import_nightly(context)
    assert isinstance(first, dg.RunRequest)
    assert first.run_config == {"resources": {"hrms_import_options": {"config": {"create_users": True}}}}

    assert materialize(hrms_db, tmp_path, import_dir=incoming).success
    with dg.build_schedule_context(resources={"hrms_db": hrms_db}) as context:
        skipped = schedules.hrms_import_nightly(context)
    assert isinstance(skipped, dg.SkipReason)
    assert "no file" in skipped.skip_message and "changed since the last successful import" in skipped.skip_message

    (incoming / "users.csv").write_text((incoming / "users.csv").read_text().replace("Engineer,active", "Engineer,on_leave", 1))
    with dg.build_schedule_context(resources={"hrms_db": hrms_db}) as context:
        changed = schedules.hrms_import_nightly(context)
    assert isinstance(changed, dg.RunRequest) and "users.csv" in changed.tags["hrms/changed_files"]


def test_restoring_a_stage_backup_undoes_the_stage_and_a_reimport_redoes_it(hrms_db, database_url, tmp_path):
    from hrms_pipelines import backups

    assert materialize(hrms_db, tmp_path, full_backup=["all"]).success
    assert len(backups.list_backups()) == 4, "full_backup: [all] backs up every stage's tables"
    history_backup = next(m for m in backups.list_backups() if m.label == "import_history")
    assert {t.table for t in history_backup.tables} >= {"hrms.history_timelineevent", "hrms.imports_importrecord"}
    with hrms_db.connection(RESTORER) as conn:
        backups.restore_backup(conn, history_backup.backup_id, run_id="restore-test")
    after_restore = counts(database_url)
    assert after_restore["history_timelineevent"] == 0 and after_restore["employees_employee"] == 200
    # the import record went back with the data, so the file is not mistaken for already imported
    again = materialize(hrms_db, tmp_path)
    assert again.success
    assert counts(database_url)["history_timelineevent"] == 2000
