"""revert_migrations needs the deployment's consent to destroy data (hrms_pipelines.migrations.consent).

A down file that drops or empties a table holding rows, or touches the audit log, is refused, with
nothing changed, unless HRMS_REVERT_ALLOW names that migration; `target: zero` needs HRMS_ENV set to
development. A permitted revert first takes an encrypted, signed backup of the tables it empties and
writes audit rows that outlive it."""

from __future__ import annotations

import gzip
import io
import json

import psycopg
import pytest

from hrms_pipelines import settings
from hrms_pipelines.backups import crypto
from hrms_pipelines.backups.manifest import MANIFEST, SIGNATURE
from hrms_pipelines.migrations import consent, runner
from hrms_pipelines.migrations.jobs import revert_migrations


def revert(hrms_db, **config):
    result = revert_migrations.execute_in_process(
        run_config={"ops": {"revert_to_target": {"config": config}}}, resources={"hrms_db": hrms_db},
        raise_on_error=False)
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = "\n".join(e.step_failure_data.user_failure_data.description for e in failures
                        if e.step_failure_data.user_failure_data is not None)
    return result, message


def state(database_url: str) -> tuple:
    """The ledger, the HR tables and the columns of the import records: what a refusal must not change."""
    with psycopg.connect(database_url) as conn:
        return (
            sorted(runner.read_ledger(conn)),
            conn.execute("SELECT array_agg(relname ORDER BY relname) FROM pg_class c JOIN pg_namespace n "
                         "ON n.oid = c.relnamespace WHERE n.nspname = 'hrms' AND relkind IN ('r', 'p')").fetchone()[0],
            conn.execute("SELECT array_agg(attname ORDER BY attname) FROM pg_attribute WHERE attnum > 0 AND NOT "
                         "attisdropped AND attrelid = 'hrms.imports_importrecord'::regclass").fetchone()[0],
            conn.execute("SELECT count(*) FROM hrms.core_auditlog").fetchone()[0],
        )


@pytest.fixture
def an_import_record(database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO hrms.imports_importrecord (stage, file_name, file_sha256, outcome, run_id) "
                     "VALUES ('users', 'users-consent-canary.csv', repeat('a', 64), 'succeeded', 'run-1')")
    return "users-consent-canary.csv"


def test_a_revert_that_drops_rows_is_refused_without_consent(hrms_db, database_url, an_import_record, monkeypatch):
    monkeypatch.delenv(consent.ALLOW_ENV, raising=False)
    before = state(database_url)
    for dry_run in (True, False):
        result, message = revert(hrms_db, app="imports", target="0001", dry_run=dry_run)
        assert not result.success
        assert "imports/0002_change_capture" in message and "hrms.imports_importrecord (1 rows)" in message
        assert f"{consent.ALLOW_ENV}=imports:0002" in message and "Nothing was reverted" in message
    assert state(database_url) == before


def test_consent_names_exactly_what_may_be_reverted(hrms_db, database_url, an_import_record, monkeypatch):
    monkeypatch.setenv(consent.ALLOW_ENV, "payroll:0003, imports:0001")  # not imports:0002
    before = state(database_url)
    result, message = revert(hrms_db, app="imports", target="0001")
    assert not result.success and "imports/0002_change_capture" in message
    assert state(database_url) == before
    monkeypatch.setenv(consent.ALLOW_ENV, "imports:0002; drop table")
    result, message = revert(hrms_db, app="imports", target="0001")
    assert not result.success and "is not app:version" in message
    assert state(database_url) == before


def test_a_consented_revert_backs_up_and_audits_first(hrms_db, database_url, an_import_record, monkeypatch,
                                                      deployment_dirs):
    monkeypatch.setenv(consent.ALLOW_ENV, "imports:0002")
    result, message = revert(hrms_db, app="imports", target="0001")
    assert result.success, message
    (backup_id,) = [e.event_specific_data.metadata["revert_backup_id"].value for e in result.all_events
                    if e.event_type_value == "STEP_OUTPUT" and "revert_backup_id" in e.event_specific_data.metadata]
    folder = deployment_dirs["backups"] / consent.REVERTS_FOLDER
    (backup,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert backup.name == backup_id
    body = (backup / MANIFEST).read_bytes()
    crypto.verify(body, (backup / SIGNATURE).read_bytes(), backup.name, backup / SIGNATURE)  # signed by the service
    manifest = json.loads(body)
    (table,) = manifest["tables"]
    assert table["table"] == "hrms.imports_importrecord" and table["rows"] == 1
    encrypted = (backup / table["file"]).read_bytes()
    assert an_import_record.encode() not in encrypted  # encrypted at rest
    plain = io.BytesIO()
    crypto.decrypt_stream(io.BytesIO(encrypted), plain, crypto.identities())
    assert an_import_record in gzip.decompress(plain.getvalue()).decode()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('hrms.imports_undoinsert')").fetchone()[0] is None  # reverted
        rows = conn.execute("SELECT table_name, row_key, before, after FROM hrms.core_auditlog "
                            "WHERE source = 'revert_migrations'").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("hrms.imports_importrecord", "imports/0002_change_capture", {"rows": 1})]
    assert rows[0][3]["backup_id"] == backup.name and rows[0][3]["allowed_by"] == f"{consent.ALLOW_ENV}=imports:0002"


def test_a_partial_revert_that_lifts_the_audit_logs_protection_needs_consent(hrms_db, database_url, monkeypatch):
    monkeypatch.delenv(consent.ALLOW_ENV, raising=False)
    result, message = revert(hrms_db, app="imports", target="0001")  # no rows: nothing to consent to
    assert result.success, message
    before = state(database_url)
    result, message = revert(hrms_db, app="core", target="0002")
    assert not result.success
    assert "core/0003_duty_roles: touches the audit log" in message
    assert state(database_url) == before
    monkeypatch.setenv(consent.ALLOW_ENV, "core:0003")
    result, message = revert(hrms_db, app="core", target="0002")
    # Consent given, and still refused: since core/0005 the audit log belongs to hrms_audit_owner, a role
    # nobody logs in as, so PostgreSQL refuses the migrator the down file that would lift its protection.
    assert not result.success
    assert "core/0003_duty_roles" in message and "must be owner of table core_auditlog" in message
    with psycopg.connect(database_url) as conn:
        owner, triggers = conn.execute(
            "SELECT relowner::regrole::text, (SELECT array_agg(tgenabled ORDER BY tgname) FROM pg_trigger "
            "WHERE tgrelid = c.oid AND NOT tgisinternal) FROM pg_class c WHERE oid = 'hrms.core_auditlog'::regclass").fetchone()
    assert owner == "hrms_audit_owner" and triggers and set(triggers) == {"O"}  # its guards still on


@pytest.mark.parametrize("environment", [None, "production", "staging"])
def test_target_zero_needs_a_development_deployment(hrms_db, database_url, monkeypatch, environment):
    """Unset counts as not development: a production deployment that forgot HRMS_ENV is protected."""
    if environment is None:
        monkeypatch.delenv(settings.ENVIRONMENT_ENV, raising=False)
    else:
        monkeypatch.setenv(settings.ENVIRONMENT_ENV, environment)
    monkeypatch.setenv(consent.ALLOW_ENV, "core:0001")
    before = state(database_url)
    result, message = revert(hrms_db, target="zero")
    assert not result.success
    assert "refusing to revert to target 'zero'" in message and "HRMS_ENV=development" in message
    assert state(database_url) == before


def test_target_zero_in_development_still_needs_consent_for_the_audit_log(hrms_db, database_url, monkeypatch):
    monkeypatch.setenv(settings.ENVIRONMENT_ENV, "development")
    monkeypatch.delenv(consent.ALLOW_ENV, raising=False)
    before = state(database_url)
    result, message = revert(hrms_db, target="zero")
    assert not result.success
    assert "core/0001_foundation" in message and "core/0003_duty_roles" in message
    assert state(database_url) == before
