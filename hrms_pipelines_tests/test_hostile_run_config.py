"""Whoever can launch a run can do only what that job is for.

Dagster's open-source webserver has no login, so these tests attack the way anyone who reaches it
would: through the GraphQL API of a real webserver (started on a free local port, on test databases)
and through `execute_in_process`, with hostile run config.

- Every field that used to choose a folder, a file path, a database or the IO manager's folder is
  gone from the config schema: the launch itself is refused.
- Every remaining name field (import files, the log file, a backup id, migration paths) refuses
  absolute paths, `..`, symlinks, FIFOs and device files with a clear error.
- Files planted outside the configured roots are never read (their content shows in no log or event)
  and nothing outside the roots is created or modified.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.definitions import defs
from hrms_pipelines.imports.options import RESOURCE_KEY
from hrms_pipelines.resources import PinnedDatabase
from hrms_pipelines_tests.shared_ui import CANARY, deployment_env, launch, run_messages

# the shared webserver (shared_ui.py): every test of this file on its one pytest-xdist worker, in order
pytestmark = pytest.mark.xdist_group("webserver")

# The fields that are gone: (job, run config that sets one). Each must be refused by the schema.
REMOVED = [
    ("apply_migrations", {"ops": {"plan_migrations": {"config": {"migrations_dir": "/tmp/evil"}}}}),
    ("revert_migrations", {"ops": {"revert_to_target": {"config": {"target": "zero", "migrations_dir": "/tmp/evil"}}}}),
    ("check_migrations", {"ops": {"check_migration_files": {"config": {"migrations_dir": "/tmp/evil"}}}}),
    ("restore_backup", {"ops": {"verify_backup_files": {"config": {"backup_id": "x", "backup_dir": "/tmp/evil"}}}}),
    ("hrms_import", {"resources": {RESOURCE_KEY: {"config": {"import_dir": "/etc"}}}}),
    ("hrms_import", {"resources": {RESOURCE_KEY: {"config": {"backup_dir": "/tmp/evil"}}}}),
    ("hrms_import_dry_run", {"resources": {RESOURCE_KEY: {"config": {"import_dir": "/etc"}}}}),
    ("audit_log_partitions", {"ops": {"core_auditlog_partitions": {"config": {"detach_older_than_months": 1}}}}),
    *[(job, {"resources": {"hrms_db": {"config": {"url": "postgresql://postgres@/postgres"}}}})
      for job in ("hrms_import", "apply_migrations", "restore_backup", "check_migrations", "field_backfill")],
    *[(job, {"resources": {"io_manager": {"config": {"base_dir": "/tmp/evil"}}}})
      for job in ("hrms_import", "apply_migrations", "seed_environment")],
    *[(job, {"resources": {"alert_notifier": {"config": {"url": "http://attacker.example/hook"}}}})
      for job in ("hrms_import", "restore_backup")],
    ("restore_backup", {"resources": {"io_manager": {"config": {"base_dir": "/tmp/evil"}}},
                        "ops": {"verify_backup_files": {"config": {"backup_id": "x"}}}}),
]


# --------------------------------------------------------------------------------------------------
# The deployment under attack: configured roots, and files planted outside them


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `roots` (not following symlinks) with its type, size and mtime."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                info = path.lstat()
                seen[str(path)] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return seen


@pytest.fixture(scope="module")
def deployment(hostile_deployment):
    """Configured roots (import folder holding the sample and the traps, backups, logs, rejects, keys,
    migrations) and an `outside` folder with planted files no run may read or touch (shared_ui.py)."""
    return hostile_deployment


@pytest.fixture
def configured(deployment, monkeypatch):
    """This process as the deployment is configured (for execute_in_process)."""
    for key, value in deployment_env(deployment).items():
        monkeypatch.setenv(key, value)
    return deployment


@pytest.fixture(scope="module")
def webserver(shared_webserver):
    """The real webserver (+ daemon, which dequeues runs), shared by the GraphQL suites (shared_ui.py)."""
    return shared_webserver


# --------------------------------------------------------------------------------------------------
# Removed fields: refused by the config schema


@pytest.mark.parametrize("job,config", REMOVED, ids=[f"{j}-{i}" for i, (j, _) in enumerate(REMOVED)])
def test_a_removed_field_is_refused_in_process(job, config, configured):
    definition = defs.resolve_job_def(job)
    with pytest.raises(dg.DagsterInvalidConfigError, match="unexpected config entry"):
        definition.execute_in_process(run_config=config, resources={"hrms_db": PinnedDatabase(location=configured["database_url"])},
                                      raise_on_error=False)


def test_every_removed_field_is_refused_through_the_webserver(webserver, deployment):
    before = snapshot(deployment["outside"])
    earlier = {r["runId"] for r in webserver.runs()}  # the webserver is shared: runs of other suites
    for job, config in REMOVED:
        result = launch(webserver, job, config)
        assert result["__typename"] == "RunConfigValidationInvalid", (job, result)
        assert any("unexpected config entry" in e["message"] for e in result["errors"]), (job, result)
    attacked = {job for job, _ in REMOVED}
    launched = [r for r in webserver.runs() if r["jobName"] in attacked and r["runId"] not in earlier
                and not any(t["key"] == "dagster/sensor_name" for t in r["tags"])]
    assert launched == [], "no run was created"
    assert snapshot(deployment["outside"]) == before


# --------------------------------------------------------------------------------------------------
# Remaining name fields: a plain name inside the configured root, or a clear refusal


def hostile_names(dirs) -> dict[str, tuple[str, str]]:
    """attack -> (file name given in run config, what the refusal must say)."""
    names = {
        "absolute": (str(dirs["outside"] / "secret.csv"), "holds a path separator"),
        "dot-dot": ("../outside/secret.csv", "holds a path separator"),
        "hidden": (".hidden.csv", "starts with '.'"),
        "symlink": ("link.csv", "is a symbolic link"),
        "fifo": ("fifo.csv", "is a named pipe (FIFO)"),
        "nul": ("users\x00.csv", "holds control characters"),
    }
    if (dirs["imports"] / "device.csv").exists():
        names["device"] = ("device.csv", "is a device")
    return names


IMPORT_FIELDS = ["ladders_file", "users_file", "history_file", "org_files", "log_file"]


def import_config(field: str, name: str) -> dict:
    value = [name] if field == "org_files" else name
    return {"create_users": True, field: value}


@pytest.fixture(scope="module")
def instance():
    """One test instance for the module's in-process runs (each is read back by its run id): creating
    one costs seconds (7 s on a loaded 2-core machine), one per attack cost minutes."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.mark.parametrize("job", ["hrms_import", "hrms_import_dry_run"])
@pytest.mark.parametrize("field", IMPORT_FIELDS)
def test_import_name_fields_refuse_every_trick_in_process(job, field, configured, database_url_of_deployment, instance):
    dirs = configured
    definition = defs.resolve_job_def(job)
    before = snapshot(dirs["outside"], dirs["imports"], dirs["migrations"])
    for attack, (name, why) in hostile_names(dirs).items():
        if field == "log_file" and attack in ("symlink", "fifo", "device"):
            # the traps of the logs folder
            name, why = {"symlink": ("planted.log", "is a symbolic link"), "fifo": ("pipe.log", "named pipe"),
                         "device": ("/dev/null", "holds a path separator")}[attack]
        result = definition.execute_in_process(
            run_config={"resources": {RESOURCE_KEY: {"config": import_config(field, name)}}}, instance=instance,
            resources={"hrms_db": PinnedDatabase(location=database_url_of_deployment)}, raise_on_error=False)
        assert not result.success, (field, attack)
        text = "\n".join(r.user_message for r in instance.all_logs(result.run_id))
        failures = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert any(why in message for message in failures), (field, attack, failures)
        assert CANARY not in text and not any(CANARY in m for m in failures), (field, attack)
    assert snapshot(dirs["outside"], dirs["imports"], dirs["migrations"]) == before


@pytest.mark.parametrize("name,why", [("planted.log", "is a symbolic link"), ("pipe.log", "named pipe")])
def test_a_log_file_planted_as_a_symlink_or_fifo_is_never_opened(name, why, configured, database_url_of_deployment):
    dirs = configured
    before = (dirs["outside"] / "target.log").read_text()
    result = defs.resolve_job_def("hrms_import_dry_run").execute_in_process(
        run_config={"resources": {RESOURCE_KEY: {"config": {"create_users": True, "log_file": name}}}},
        resources={"hrms_db": PinnedDatabase(location=database_url_of_deployment)}, raise_on_error=False)
    assert not result.success
    message = next(e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert why in message
    assert (dirs["outside"] / "target.log").read_text() == before
    assert (dirs["logs"] / "planted.log").is_symlink() and stat.S_ISFIFO((dirs["logs"] / "pipe.log").lstat().st_mode)


@pytest.fixture
def database_url_of_deployment(configured):
    return configured["database_url"]


@pytest.mark.parametrize("backup_id,why", [
    ("../../outside", "is not a backup id"),
    ("/etc/passwd", "is not a backup id"),
    ("20990101T000000Z-abc/../../x", "is not a backup id"),
    ("20990101T000000Z-nothere", "unknown backup id"),
])
def test_restore_reads_only_backups_in_the_configured_folder(backup_id, why, configured):
    result = defs.resolve_job_def("restore_backup").execute_in_process(
        run_config={"ops": {"verify_backup_files": {"config": {"backup_id": backup_id}}}},
        resources={"hrms_db": PinnedDatabase(location=configured["database_url"])}, raise_on_error=False)
    assert not result.success
    message = next(e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert why in message


@pytest.mark.parametrize("path,why", [
    ("/etc/passwd", "outside the migrations folder"),
    ("../outside/0001_evil.up.sql", "no '..', no hidden names"),
    ("evil/0001_evil.up.sql", "is a symbolic link"),
    ("evil", "is a symbolic link"),
])
def test_check_migrations_reads_only_the_migrations_folder(path, why, configured):
    result = defs.resolve_job_def("check_migrations").execute_in_process(
        run_config={"ops": {"check_migration_files": {"config": {"paths": [path]}}}},
        resources={"hrms_db": PinnedDatabase(location=configured["database_url"])}, raise_on_error=False)
    assert not result.success
    message = next(e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert why in message and "COPY" not in message


def test_hostile_names_through_the_webserver(webserver, deployment):
    """Each name field once, each with another trick, launched over GraphQL and run by the daemon: a
    clear failure, the planted content in no event, nothing outside the roots touched."""
    dirs = deployment
    names = hostile_names(dirs)
    attacks = [
        ("hrms_import", {"resources": {RESOURCE_KEY: {"config": import_config("users_file", names["symlink"][0])}}},
         names["symlink"][1]),
        ("hrms_import_dry_run", {"resources": {RESOURCE_KEY: {"config": import_config("history_file", names["absolute"][0])}}},
         names["absolute"][1]),
        ("hrms_import", {"resources": {RESOURCE_KEY: {"config": import_config("ladders_file", names["fifo"][0])}}},
         names["fifo"][1]),
        ("hrms_import_dry_run", {"resources": {RESOURCE_KEY: {"config": import_config("org_files", names["dot-dot"][0])}}},
         names["dot-dot"][1]),
        ("hrms_import_dry_run", {"resources": {RESOURCE_KEY: {"config": import_config("log_file", "planted.log")}}},
         "symbolic link"),
        ("restore_backup", {"ops": {"verify_backup_files": {"config": {"backup_id": "../../outside"}}}}, "is not a backup id"),
        ("check_migrations", {"ops": {"check_migration_files": {"config": {"paths": ["evil/0001_evil.up.sql"]}}}},
         "is a symbolic link"),
    ]
    before = snapshot(dirs["outside"], dirs["imports"], dirs["migrations"])
    launched = []
    for job, config, why in attacks:
        result = launch(webserver, job, config)
        assert result["__typename"] == "LaunchRunSuccess", (job, result)
        launched.append((result["run"]["runId"], job, why))
    for run_id, job, why in launched:
        assert webserver.wait_for_run(run_id, timeout=240) == "FAILURE", job
        messages = run_messages(webserver, run_id)
        assert why in messages, (job, why, messages[-2000:])
        assert CANARY not in messages
    assert snapshot(dirs["outside"], dirs["imports"], dirs["migrations"]) == before
    # Dagster's own storage never saw the planted content either
    with psycopg.connect(webserver.env[settings.DAGSTER_PG_URL_ENV].replace("postgresql+psycopg2://", "postgresql://")) as conn:
        hits = conn.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s", [f"%{CANARY}%"]).fetchone()[0]
    assert hits == 0
    assert not Path("/tmp/pwned").exists()
