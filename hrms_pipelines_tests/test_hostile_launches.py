"""Hostile launches over GraphQL by another OS user (issue 17, "How it is proven").

The launcher is `nobody` running a standard-library HTTP client (shared_ui.graphql_as_other_user):
it can reach the webserver on 127.0.0.1 and nothing of the service's files. The service (the shared
`dagster dev`) has its secrets set to canaries: every duty's password, the SMTP password and a
webhook URL whose path is a token. The launcher tries

- `{env: NAME}` in every kind of field (an import file name, `full_backup`, a backup id, a number,
  a flag): refused by config validation, no run created;
- `revert_migrations {target: zero}`: a run that fails with the consent gate's refusal, every HR
  table and the ledger unchanged, and its failure alert delivered;

then every table of Dagster's storage (cast whole to text), every compute-log file and every alert
the webhook received are searched for the canaries: none is anywhere.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from psycopg import sql

from hrms_pipelines import settings
from hrms_pipelines.imports.options import RESOURCE_KEY
from hrms_pipelines.migrations import runner
from hrms_pipelines_tests import shared_ui
from hrms_pipelines_tests.shared_ui import ALERTS, LAUNCH, SECRET_CANARIES, WEBHOOK_TOKEN

# the shared webserver (shared_ui.py): every test of this file on its one pytest-xdist worker, in order
pytestmark = pytest.mark.xdist_group("webserver")

SENSOR = """query S($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename
  ... on Sensor { sensorState { ticks(limit: 1) { status } } } } }"""
FAILURE_SENSOR = {"repositoryLocationName": "hrms_pipelines", "repositoryName": "__repository__",
                  "sensorName": "hrms_run_failure_alerts"}


def hostile_graphql(ui, query: str, variables: dict) -> dict:
    """As `nobody` when this process may switch users (root), else as this user."""
    if shared_ui.can_switch_user():
        return shared_ui.graphql_as_other_user(ui, query, variables)
    return ui.graphql(query, variables)


def hostile_launch(ui, job: str, config: dict) -> dict:
    return hostile_graphql(ui, LAUNCH, {"job": job, "config": config, "tags": []})["launchRun"]


def canaries() -> list[str]:
    return [*SECRET_CANARIES.values(), WEBHOOK_TOKEN]


def storage_dsn(ui) -> str:
    return ui.env[settings.DAGSTER_PG_URL_ENV].replace("postgresql+psycopg2://", "postgresql://")


def hr_state(database_url: str) -> tuple:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute("SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname = 'hrms' AND c.relkind IN ('r', 'p')").fetchone()[0]
        return sorted(runner.read_ledger(conn)), tables


def test_the_launcher_cannot_read_the_services_files(shared_webserver, hostile_deployment):
    if not shared_ui.can_switch_user():
        pytest.skip("needs root (setpriv) to run the launcher as another OS user")
    probe = "import sys\ntry:\n    open(sys.argv[1]).read()\nexcept PermissionError:\n    print('refused')\n"
    for path in (hostile_deployment["imports"] / "users.csv", hostile_deployment["root"] / "dagster-dev.log"):
        done = shared_ui.as_other_user("/usr/bin/python3", "-I", "-c", probe, str(path))
        assert done.stdout.strip() == "refused", (path, done.stdout, done.stderr)


ENV_LAUNCHES = [
    ("hrms_import", {"resources": {RESOURCE_KEY: {"config": {"users_file": {"env": "HRMS_MIGRATOR_PASSWORD"}}}}}),
    ("hrms_import", {"resources": {RESOURCE_KEY: {"config": {"full_backup": [{"env": "HRMS_ALERT_WEBHOOK_URL"}]}}}}),
    ("hrms_import_dry_run", {"resources": {RESOURCE_KEY: {"config": {"chunk_rows": {"env": "HRMS_READER_PASSWORD"}}}}}),
    ("hrms_import_dry_run", {"resources": {RESOURCE_KEY: {"config": {"dry_run": {"env": "HRMS_IMPORTER_PASSWORD"}}}}}),
    ("restore_backup", {"ops": {"verify_backup_files": {"config": {"backup_id": {"env": "HRMS_RESTORER_PASSWORD"}}}}}),
    ("revert_migrations", {"ops": {"revert_to_target": {"config": {"target": {"env": "HRMS_ALERT_SMTP_PASSWORD"}}}}}),
    ("check_migrations", {"ops": {"check_migration_files": {"config": {"paths": [{"env": "HRMS_DATABASE_URL"}]}}}}),
]


def launched(ui) -> list[str]:
    """The runs someone launched (not a sensor's or a schedule's: the daemon's migrations sensor may
    queue a check_migrations run of the deployment's files at any tick)."""
    automatic = {"dagster/sensor_name", "dagster/schedule_name"}
    return [r["runId"] for r in ui.runs() if not automatic & {t["key"] for t in r["tags"]}]


def test_env_references_are_refused_at_launch(shared_webserver):
    before = launched(shared_webserver)
    for job, config in ENV_LAUNCHES:
        result = hostile_launch(shared_webserver, job, config)
        assert result["__typename"] == "RunConfigValidationInvalid", (job, result)
        text = json.dumps(result)
        assert not [c for c in canaries() if c in text], (job, result)
    assert launched(shared_webserver) == before, "no run was created"


def wait_for_the_failure_sensor(ui, timeout: float = 600) -> None:
    """A run-failure sensor reports failures after its first tick: wait for that tick (the daemon's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = ui.graphql(SENSOR, {"s": FAILURE_SENSOR})["sensorOrError"]
        if data["__typename"] == "Sensor" and data["sensorState"]["ticks"]:
            return
        time.sleep(2)
    raise AssertionError(f"the failure sensor never ticked within {timeout}s; see {ui.log_path}")


def wait_for_alert(run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for body in list(ALERTS):
            alert = json.loads(body)
            if alert.get("alert", {}).get("run_id") == run_id:
                return alert
        time.sleep(2)
    raise AssertionError(f"no alert for run {run_id} within {timeout}s")


def test_revert_to_zero_from_the_ui_is_refused_and_changes_nothing(shared_webserver, hostile_deployment):
    ui = shared_webserver
    wait_for_the_failure_sensor(ui)
    before = hr_state(hostile_deployment["database_url"])
    result = hostile_launch(ui, "revert_migrations", {"ops": {"revert_to_target": {"config": {"target": "zero"}}}})
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    assert ui.wait_for_run(run_id, timeout=600) == "FAILURE"
    assert "refusing to revert to target 'zero'" in shared_ui.run_messages(ui, run_id)
    assert hr_state(hostile_deployment["database_url"]) == before
    alert = wait_for_alert(run_id)
    assert "refusing to revert to target 'zero'" in alert["text"]


def test_no_canary_anywhere(shared_webserver, hostile_deployment):
    """Every table of Dagster's storage cast to text, every compute log, every alert received."""
    hits = []
    with psycopg.connect(storage_dsn(shared_webserver)) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
        assert "event_logs" in tables and "runs" in tables
        for table in tables:
            found = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE ANY(%s)").format(
                sql.Identifier(table)), [[f"%{c}%" for c in canaries()]]).fetchone()[0]
            if found:
                hits.append(f"{table}: {found} rows")
    home = hostile_deployment["root"] / "dagster"
    logs = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix in (".out", ".err") for p in logs), "the scan saw the compute logs"
    hits += [f"{p}" for p in logs if any(c in p.read_bytes().decode("utf-8", "replace") for c in canaries())]
    assert ALERTS, "the scan saw at least one alert"
    hits += [f"alert {body[:200]!r}" for body in ALERTS if any(c.encode() in body for c in canaries())]
    assert hits == []
