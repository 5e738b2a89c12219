"""Trace mode never runs migrator-owned code with more rights than the migrator (issue 17 item 2).

A migration already applied to the target (the gate bypassed: the runner applies it directly) hides
code where a superuser session of the trace used to run it:
- a trigger on the ledger, fired when the trace copied the target's ledger rows as the scratch
  cluster's superuser;
- a schema named like that superuser (`postgres`, first on its default search_path) holding an
  operator `<>(oid, regrole)`, a better match than pg_catalog's for what the duty-role bootstrap
  compares (`nspowner <> 'hrms_migrator'::regrole`), run as the superuser in every scratch database,
  and a function shadowing pg_restore_relation_stats (the size statistics the trace carries over).
Each writes `current_user` into a canary table and tries `COPY ... TO PROGRAM 'touch <file>'`. After
a `check_migrations trace: true`, an `apply_migrations` dry run and a rehearsal replayed from the
ledger: no file appears, and the canary (read just before each scratch database is dropped) holds
the migrator's rows and never the superuser's.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from hrms_pipelines import roles, settings
from hrms_pipelines.migrations.files import MigrationError
from hrms_pipelines.migrations import files
from hrms_pipelines.migrations.check import Options
from hrms_pipelines.migrations.check_job import check_migrations
from hrms_pipelines.migrations.jobs import apply_migrations
from hrms_pipelines.migrations.trace import cluster as clusters
from hrms_pipelines.migrations.trace.check import traced_paths
from hrms_pipelines_tests.conftest import as_role, project_copy


def hostile(marker: Path) -> str:
    touch = f"touch {marker}"
    return f"""
CREATE TABLE hrms_meta.trace_canary (who text NOT NULL, via text NOT NULL);

CREATE FUNCTION hrms_meta.ledger_hook() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    INSERT INTO hrms_meta.trace_canary VALUES (current_user, 'ledger trigger');
    BEGIN
        EXECUTE 'COPY (SELECT 1) TO PROGRAM ' || quote_literal('{touch}-ledger');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN NEW;
END $body$;
CREATE TRIGGER ledger_hook AFTER INSERT ON hrms_meta.migration_ledger
    FOR EACH ROW EXECUTE FUNCTION hrms_meta.ledger_hook();

CREATE SCHEMA postgres;
CREATE FUNCTION postgres.oid_ne_regrole(oid, regrole) RETURNS boolean LANGUAGE plpgsql AS $body$
BEGIN
    INSERT INTO hrms_meta.trace_canary VALUES (current_user, 'operator');
    BEGIN
        EXECUTE 'COPY (SELECT 1) TO PROGRAM ' || quote_literal('{touch}-operator');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN $1 OPERATOR(pg_catalog.<>) $2::oid;
END $body$;
CREATE OPERATOR postgres.<> (LEFTARG = oid, RIGHTARG = regrole, FUNCTION = postgres.oid_ne_regrole);
-- an exact match for the size statistics call, better than pg_catalog's VARIADIC "any"
CREATE FUNCTION postgres.pg_restore_relation_stats(text, text, text, text, text, integer, text, real)
RETURNS boolean LANGUAGE plpgsql AS $body$
BEGIN
    INSERT INTO hrms_meta.trace_canary VALUES (current_user, 'function');
    BEGIN
        EXECUTE 'COPY (SELECT 1) TO PROGRAM ' || quote_literal('{touch}-function');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END $body$;
"""


HARMLESS = "ALTER TABLE hrms.payroll_payslip ADD COLUMN note text;\n"


def writable_by_the_server() -> Path:
    """A folder the server's OS user may write to (it may not be ours: pytest's tmp_path would hide a
    file the superuser's COPY ... TO PROGRAM wrote, or stop it from being written)."""
    folder = Path(tempfile.mkdtemp(prefix="hrms_hostile_"))
    folder.chmod(0o777)
    return folder


@pytest.fixture(autouse=True)
def _remove_markers():
    before = set(Path(tempfile.gettempdir()).glob("hrms_hostile_*"))
    yield
    for folder in set(Path(tempfile.gettempdir()).glob("hrms_hostile_*")) - before:
        shutil.rmtree(folder, ignore_errors=True)


def hostile_target(tmp_path: Path, monkeypatch, database_url: str) -> tuple[Path, Path]:
    """The project's migrations plus payroll/0100 (hostile, applied to the target as the migrator)
    and payroll/0101 (harmless, pending: what the trace rehearses)."""
    root = project_copy(tmp_path / "migrations")
    marker = writable_by_the_server() / "pwned"
    (root / "payroll" / "0100_reports.up.sql").write_text(hostile(marker))
    (root / "payroll" / "0100_reports.down.sql").write_text("DROP SCHEMA postgres CASCADE;\n")
    monkeypatch.setenv(settings.MIGRATIONS_DIR_ENV, str(root))
    from hrms_pipelines.migrations import runner

    every = files.discover(root)
    # A deployment bootstrapped by an older version still let the migrator create schemas: the worst
    # case, in which the hostile schema exists on the target and reaches the rehearsal's dump.
    from psycopg import sql
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(admin.info.dbname), sql.Identifier(roles.MIGRATOR.role)))
    with psycopg.connect(as_role(database_url, roles.MIGRATOR)) as conn:
        runner.apply(conn, every, log=lambda *_: None)  # the gate bypassed: the hostile file is applied
    (root / "payroll" / "0101_note.up.sql").write_text(HARMLESS)
    (root / "payroll" / "0101_note.down.sql").write_text("ALTER TABLE hrms.payroll_payslip DROP COLUMN note;\n")
    return root, marker


def watch_canaries(monkeypatch) -> list[tuple[str, str, str]]:
    """(database, who, via) of every canary row, read as each scratch or half-built database is dropped."""
    scratch = clusters.cluster()
    seen: list[tuple[str, str, str]] = []
    drop = scratch.drop

    def reading_then_drop(name: str) -> None:
        with scratch.admin(name) as conn:
            if conn.execute("SELECT to_regclass('hrms_meta.trace_canary')").fetchone()[0]:
                seen.extend((name, who, via) for who, via in
                            conn.execute("SELECT who, via FROM hrms_meta.trace_canary").fetchall())
        drop(name)

    monkeypatch.setattr(scratch, "drop", reading_then_drop)
    return seen


def assert_harmless(marker: Path, seen: list[tuple[str, str, str]]) -> None:
    pwned = sorted(p.name for p in marker.parent.glob(marker.name + "*"))
    assert pwned == [], f"COPY ... TO PROGRAM ran as a superuser: {pwned}"
    assert seen, "the canary was never read: the hostile code did not run at all"
    whos = {who for _, who, _ in seen}
    assert whos == {roles.MIGRATOR.role}, seen
    with clusters.cluster().admin() as conn:
        superusers = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper").fetchall()}
    assert not whos & superusers


def test_check_migrations_and_a_dry_run_never_run_migrator_code_as_superuser(hrms_db, database_url, tmp_path,
                                                                           monkeypatch):
    _, marker = hostile_target(tmp_path, monkeypatch, database_url)
    seen = watch_canaries(monkeypatch)

    checked = check_migrations.execute_in_process(
        run_config={"ops": {"check_migration_files": {"config": {"trace": True, "paths": ["payroll/0101_note.up.sql"]}}}},
        resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert checked.success, [e.message for e in checked.all_events if e.event_type_value == "STEP_FAILURE"]
    ledger_rows = [s for s in seen if s[2] == "ledger trigger"]
    assert ledger_rows, seen  # the ledger was copied (and the traced migration recorded) by the migrator

    dry = apply_migrations.execute_in_process(
        run_config={"ops": {"plan_migrations": {"config": {"dry_run": True}}}}, resources={"hrms_db": hrms_db})
    assert dry.success
    assert_harmless(marker, seen)
    assert clusters.cluster().databases() == []


def test_a_rehearsal_replayed_from_the_ledger_never_runs_migrator_code_as_superuser(database_url, tmp_path,
                                                                                     monkeypatch):
    root, marker = hostile_target(tmp_path, monkeypatch, database_url)
    seen = watch_canaries(monkeypatch)
    # The scratch database is bootstrapped as a deployment is: its migrator may not create a schema,
    # so replaying the hostile file stops there -- as the migrator, never with more rights.
    with psycopg.connect(as_role(database_url, roles.MIGRATOR), autocommit=True) as conn:
        with pytest.raises(MigrationError, match="permission denied for database"):
            traced_paths([root / "payroll" / "0101_note.up.sql"], migrations_dir=root, conn=conn, options=Options())
    # the bootstrap of the scratch database (a superuser session) compared against the regrole: with its
    # search_path pinned, pg_catalog's operator, never the one in the schema named like the superuser
    assert not any(via in ("operator", "function") for _, _, via in seen), seen
    assert sorted(p.name for p in marker.parent.glob(marker.name + "*")) == []
    assert {who for _, who, _ in seen} <= {roles.MIGRATOR.role}, seen


def test_the_migrator_needs_no_create_on_the_database_once_the_schemas_exist(empty_database_url):
    """The ledger's schema is created only when missing, and a restored dump's CREATE SCHEMA of a schema
    the scratch database has already is left out: neither needs the migrator's CREATE on the database."""
    from psycopg import sql

    from hrms_pipelines.migrations import runner
    from hrms_pipelines.migrations.trace import schema

    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()[0]
        # the bootstrap made hrms_meta already (the administrator's SQL), owned by the migrator
        assert admin.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'hrms_meta'").fetchone() == (
            roles.MIGRATOR.role,)
        admin.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(
            sql.Identifier(name), sql.Identifier(roles.MIGRATOR.role)))
    with psycopg.connect(as_role(empty_database_url, roles.MIGRATOR), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA IF NOT EXISTS hrms_meta")  # what the runner used to run every time
        runner.ensure_ledger(conn)
        assert runner.ledger_exists(conn)
    dump = "CREATE SCHEMA hrms;\nCREATE SCHEMA hrms_meta;\nCREATE TABLE hrms.t (id int);\n"
    assert schema._without_existing_schemas(dump, {"hrms_meta", "public"}) == (
        "CREATE SCHEMA hrms;\nCREATE TABLE hrms.t (id int);\n")
