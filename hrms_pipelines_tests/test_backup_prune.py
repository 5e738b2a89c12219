"""Retention (prune_backups) and the backup jobs and schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from hrms_pipelines import backups
from hrms_pipelines.backups import BackupError, Retention, fs, prune
from hrms_pipelines_tests.backup_helpers import (  # noqa: F401  (fixtures)
    TABLES, backup_dirs, backup_root, conn, digests, mutate, populated, reader, restorer,
)


@pytest.fixture
def history(populated, reader, restorer, backup_root):
    """Three users backups, one history backup, one snapshot and one pre-restore backup, oldest first."""
    made = {}
    for n in range(3):
        made[f"users{n}"] = backups.take_backup(reader, ["employees_employee"], label="import_users", run_id=f"u{n}",
                                                backup_root=backup_root)
    made["history"] = backups.take_backup(reader, ["history_timelineevent"], label="import_history", run_id="h",
                                          backup_root=backup_root)
    made["snapshot"] = backups.take_backup(reader, TABLES, label="snapshot", run_id="s", backup_root=backup_root)
    made["pre"] = backups.restore_backup(restorer, made["snapshot"].backup_id, backup_root=backup_root).pre_restore_backup
    return made


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_prune_keeps_the_newest_of_each_group_the_young_and_what_a_restore_reads(history, backup_root):
    ids = {name: m.backup_id for name, m in history.items()}
    everything = sorted(ids.values())
    assert backup_dirs(backup_root) == everything

    # everything is younger than 30 days: nothing goes
    result = backups.prune_backups(None, retention=Retention(keep_newest=1, keep_days=30), now=later(10),
                                   backup_root=backup_root)
    assert result.removed == [] and backup_dirs(backup_root) == everything

    # 40 days on, keep the 2 newest per group: only the oldest users backup may go. The dry run says so.
    retention = Retention(keep_newest=2, keep_days=30)
    said: list[str] = []
    dry = backups.prune_backups(None, retention=retention, now=later(40), dry_run=True, backup_root=backup_root,
                                log=said.append)
    assert [d.manifest.backup_id for d in dry.removed] == [ids["users0"]]
    assert dry.removed[0].action == "would remove" and backup_dirs(backup_root) == everything
    assert any(ids["users0"] in line and "import_users" in line and "hrms.employees_employee" in line and "bytes" in line
               for line in said)

    # while a restore reads it, it stays
    with fs.locked(history["users0"].directory, shared=True):
        held = backups.prune_backups(None, retention=retention, now=later(40), backup_root=backup_root)
    assert held.removed == [] and backup_dirs(backup_root) == everything
    assert {d.why for d in held.kept if d.manifest.backup_id == ids["users0"]} == {"in use: a restore is reading it"}

    said.clear()
    done = backups.prune_backups(None, retention=retention, now=later(40), backup_root=backup_root, log=said.append)
    assert [d.manifest.backup_id for d in done.removed] == [ids["users0"]]
    assert backup_dirs(backup_root) == sorted(set(everything) - {ids["users0"]})
    removal = next(line for line in said if line.startswith("removed"))
    assert ids["users0"] in removal and "'import_users'" in removal and "hrms.employees_employee" in removal
    assert f"{history['users0'].total_bytes:,} bytes" in removal and "taken" in removal

    # a year on, keep 1: the newest of every group survives, whatever its age
    backups.prune_backups(None, retention=Retention(keep_newest=1, keep_days=0), now=later(365), backup_root=backup_root)
    assert backup_dirs(backup_root) == sorted([ids["users2"], ids["history"], ids["snapshot"], ids["pre"]])


def test_prune_leaves_alone_what_it_cannot_vouch_for(history, backup_root):
    unsigned = history["users0"].directory
    (unsigned / "manifest.sig").unlink()
    result = backups.prune_backups(None, retention=Retention(keep_newest=1, keep_days=0), now=later(365),
                                   backup_root=backup_root)
    assert [e.directory.name for e in result.left_alone] == [unsigned.name]
    assert "unsigned" in result.left_alone[0].problem
    assert unsigned.exists()


def test_retention_comes_from_the_deployment(monkeypatch):
    assert Retention.from_environment() == Retention(7, 30)
    monkeypatch.setenv(prune.KEEP_NEWEST_ENV, "3")
    monkeypatch.setenv(prune.KEEP_DAYS_ENV, "90")
    assert Retention.from_environment() == Retention(3, 90)
    monkeypatch.setenv(prune.KEEP_NEWEST_ENV, "0")
    with pytest.raises(BackupError, match="HRMS_BACKUP_KEEP_NEWEST='0': expected a whole number of at least 1"):
        Retention.from_environment()


def test_prune_and_snapshot_jobs(populated, hrms_db, restorer, monkeypatch, deployment_dirs):
    from hrms_pipelines.backups import jobs
    from hrms_pipelines.backups.jobs import restore_backup as restore_job

    resources = {"hrms_db": hrms_db}
    snap = jobs.backup_snapshot.execute_in_process(resources=resources)
    assert snap.success
    [snapshot] = backups.list_backups()
    assert snapshot.label == "snapshot"
    assert {t.table for t in snapshot.tables} == set(backups.restorable_tables())
    assert backups.load_manifest(snapshot.backup_id).directory.parent == deployment_dirs["backups"]

    original = digests(populated)
    mutate(populated)
    config = {"ops": {"verify_backup_files": {"config": {"backup_id": snapshot.backup_id}}}}
    assert restore_job.execute_in_process(run_config=config, resources=resources).success
    assert digests(populated) == original

    monkeypatch.setenv(prune.KEEP_NEWEST_ENV, "1")
    monkeypatch.setenv(prune.KEEP_DAYS_ENV, "0")
    assert jobs.backup_snapshot.execute_in_process(resources=resources).success
    dry = jobs.prune_backups.execute_in_process(
        run_config={"ops": {"prune_backup_folders": {"config": {"dry_run": True}}}}, resources=resources)
    assert dry.success and len(backups.list_backups()) == 3
    metadata = next(e for e in dry.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    assert metadata["would_remove"].value == 1 and snapshot.backup_id in metadata["backups"].value
    assert jobs.prune_backups.execute_in_process(resources=resources).success
    assert snapshot.backup_id not in [m.backup_id for m in backups.list_backups()]
    assert len(backups.list_backups()) == 2  # the newest snapshot and the pre-restore backup


def test_backup_jobs_and_stopped_schedules_are_in_the_definitions():
    from hrms_pipelines.definitions import defs

    for name in ("prune_backups", "backup_snapshot"):
        assert isinstance(defs.resolve_job_def(name), dg.JobDefinition)
    for name in ("prune_backups_daily", "backup_snapshot_weekly"):
        assert defs.resolve_schedule_def(name).default_status == dg.DefaultScheduleStatus.STOPPED
    # run config chooses nothing but the dry run
    fields = defs.resolve_job_def("prune_backups").graph.node_named("prune_backup_folders").definition.config_schema
    assert set(fields.as_field().config_type.fields) == {"dry_run"}
