"""Run config never reads the worker's environment, never echoes a raw value, and the service's
secrets are redacted from every message (hrms_pipelines.launch_config, settings.shown, redaction).

The webserver side (a GraphQL launch with `{env: ...}` refused, canaries nowhere in Dagster's
storage) is in test_hostile_launches.py."""

from __future__ import annotations

import os
import uuid

import dagster as dg
import pytest
from dagster._config.source import IntSource, StringSource

from hrms_pipelines import alerts, errors, privacy, settings
from hrms_pipelines.definitions import defs
from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
from hrms_pipelines.launch_config import source_fields

CANARY = f"canary-{uuid.uuid4().hex}"


def all_jobs():
    return defs.get_repository_def().get_all_jobs()


def test_the_walk_finds_a_field_that_reads_the_environment():
    """The check below can fail: a schema with Source types is reported, path by path."""
    schema = dg.Shape({"ops": dg.Field(dg.Shape({"x": dg.Field(StringSource),
                                                  "y": dg.Field(dg.Noneable(dg.Array(IntSource)))}))})
    assert source_fields(schema) == ["ops.x", "ops.y"]


@pytest.mark.parametrize("job", [j.name for j in all_jobs()])
def test_no_run_config_field_accepts_env(job):
    """Every field of every job (ops, assets, resources, executor, loggers) is a plain type."""
    schema = defs.get_repository_def().get_job(job).run_config_schema.config_type
    assert source_fields(schema) == []


# One field of each kind: an op's string, an op's int, a resource's list of strings, a resource's bool.
ENV_LAUNCHES = [
    ("revert_migrations", lambda env: {"ops": {"revert_to_target": {"config": {"target": env}}}}),
    ("restore_backup", lambda env: {"ops": {"verify_backup_files": {"config": {"backup_id": env}}}}),
    ("hrms_import", lambda env: {"resources": {RESOURCE_KEY: {"config": {"users_file": env}}}}),
    ("hrms_import", lambda env: {"resources": {RESOURCE_KEY: {"config": {"full_backup": [env]}}}}),
    ("hrms_import", lambda env: {"resources": {RESOURCE_KEY: {"config": {"chunk_rows": env}}}}),
    ("hrms_import", lambda env: {"resources": {RESOURCE_KEY: {"config": {"dry_run": env}}}}),
    ("audit_log_partitions", lambda env: {"ops": {"core_auditlog_partitions": {"config": {"months_ahead": env}}}}),
]


@pytest.mark.parametrize("job,config", ENV_LAUNCHES)
def test_env_reference_is_refused_before_the_variable_is_read(job, config, monkeypatch):
    """`{env: HRMS_MIGRATOR_PASSWORD}` is refused by config validation; no lookup of the variable
    happens (os.getenv and os.environ are watched), and the error holds no value of it."""
    monkeypatch.setenv("HRMS_MIGRATOR_PASSWORD", CANARY)
    looked_up: list[str] = []
    real_getenv = os.getenv

    def watched_getenv(name, default=None):
        looked_up.append(name)
        return real_getenv(name, default)

    monkeypatch.setattr(os, "getenv", watched_getenv)
    run_config = config({"env": "HRMS_MIGRATOR_PASSWORD"})
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(defs.resolve_job_def(job), run_config)
    assert "HRMS_MIGRATOR_PASSWORD" not in looked_up
    assert CANARY not in str(refused.value)
    with pytest.raises(dg.DagsterInvalidConfigError):
        defs.resolve_job_def(job).execute_in_process(run_config=run_config)
    assert "HRMS_MIGRATOR_PASSWORD" not in looked_up


@pytest.mark.parametrize("name", ["https://hooks.example.org/services/T0/B0/" + CANARY, f"{CANARY}:x@y",
                                  f"a=b{CANARY}", f'"{CANARY}"', "x" * 300, f"{CANARY}%2F"],
                         ids=["url", "userinfo", "assignment", "quoted", "long", "escaped-slash"])  # stable ids: the canary is random
def test_a_name_that_is_not_plain_is_shown_by_length_and_hash(name):
    with pytest.raises(settings.UnsafeName) as refused:
        settings.plain_name(name, "import file")
    message = str(refused.value)
    assert CANARY not in message and "x" * 40 not in message
    assert f"<{len(name)} characters, sha256 " in message
    assert settings.shown(name) == settings.fingerprint(name)


@pytest.mark.parametrize("name", ["users.csv", "users.xlsx#Staff & Contractors", "Équipe RH (2024).xlsx",
                                  "ladders_v2-final+x.csv", "Ama's export.csv"])
def test_a_plain_name_is_shown_as_it_is(name):
    assert settings.plain_name(name, "import file") == name
    assert settings.shown(name) == repr(name)


def test_a_refused_config_value_is_not_echoed_by_pydantic():
    """A validator that refuses a value says so without pydantic's `input_value=...`."""
    with pytest.raises(Exception) as refused:
        ImportOptions(full_backup=[f"https://hooks.example.org/{CANARY}"])
    assert CANARY not in str(refused.value)
    assert "full_backup" in str(refused.value)


SECRETS = {
    "HRMS_MIGRATOR_PASSWORD": "pw-" + CANARY,
    "HRMS_IMPORTER_URL": f"postgresql://hrms_importer:imp%2F{CANARY}@db.example.org/hrms",
    "HRMS_DATABASE_URL": f"postgresql://admin:db{CANARY}@db.example.org:5432/hrms",
    "HRMS_ALERT_WEBHOOK_URL": f"https://hooks.slack.com/services/T000/B000/{CANARY}",
    "HRMS_ALERT_SMTP_PASSWORD": "smtp-" + CANARY,
}


@pytest.fixture
def secrets_set(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


def test_secret_values_are_redacted_wherever_they_appear(secrets_set):
    text = (f"no such file {SECRETS['HRMS_MIGRATOR_PASSWORD']}; url {SECRETS['HRMS_DATABASE_URL']}; "
            f"password imp/{CANARY}; posted to .../B000/{CANARY}; smtp smtp-{CANARY}; user ama@example.org")
    scrubbed = privacy.scrub_text(text)
    assert CANARY not in scrubbed
    assert "<secret HRMS_MIGRATOR_PASSWORD>" in scrubbed and "<secret HRMS_DATABASE_URL>" in scrubbed
    assert "a***@example.org" in scrubbed


def test_a_backup_key_is_redacted(monkeypatch, deployment_dirs):
    keys = deployment_dirs["keys"]
    keys.mkdir(parents=True)
    key = uuid.uuid4().hex * 2
    (keys / "backup-signing.key").write_text(f"# signing key\n{key}\n")
    assert key not in privacy.scrub_text(f"the key is {key}")


def test_the_error_boundary_and_the_alert_redact_secrets(secrets_set):
    @errors.error_boundary
    def step():
        raise FileNotFoundError(f"{SECRETS['HRMS_MIGRATOR_PASSWORD']}: no such file")

    with pytest.raises(dg.Failure) as failed:
        step()
    assert CANARY not in failed.value.description
    assert "<secret HRMS_MIGRATOR_PASSWORD>" in failed.value.description
    alert = alerts.Alert("run", "job", "step", "FileNotFoundError",
                         privacy.scrub_text(f"full_backup: {SECRETS['HRMS_ALERT_WEBHOOK_URL']}"), "http://ui/runs/run")
    assert CANARY not in alert.text()


def test_the_ui_address_is_not_a_secret(monkeypatch):
    """HRMS_DAGSTER_URL is where alerts link to: never redacted."""
    monkeypatch.setenv(alerts.DAGSTER_URL_ENV, "https://dagster.example.org/hrms-ui")
    assert privacy.scrub_text("see https://dagster.example.org/hrms-ui/runs/1") == "see https://dagster.example.org/hrms-ui/runs/1"
