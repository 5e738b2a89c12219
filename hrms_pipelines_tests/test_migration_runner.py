"""The migration runner against a real PostgreSQL: round trip, refusals, timeouts, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from hrms_pipelines.migrations import files, runner

SHORT_LOCK_WAIT = runner.Timeouts(lock_timeout="300ms", statement_timeout="20s")
SHORT_STATEMENTS = runner.Timeouts(lock_timeout="20s", statement_timeout="300ms")


def quiet(*_args) -> None:
    pass


def catalogue(url: str) -> dict[str, list[tuple]]:
    """What a schema is made of: columns, constraints, indexes, privileges, partitions."""
    queries = {
        "columns": """
            SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default,
                   is_identity, character_maximum_length, numeric_precision, numeric_scale
            FROM information_schema.columns WHERE table_schema IN ('hrms', 'hrms_meta')""",
        "constraints": """
            SELECT n.nspname, c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.convalidated
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ('hrms', 'hrms_meta')""",
        "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes WHERE schemaname IN ('hrms', 'hrms_meta')",
        "grants": """
            SELECT grantee, table_schema, table_name, privilege_type FROM information_schema.role_table_grants
            WHERE table_schema IN ('hrms', 'hrms_meta') AND grantee = 'hrms_importer'""",
        "partitions": """
            SELECT inhparent::regclass::text, inhrelid::regclass::text, pg_get_expr(c.relpartbound, c.oid)
            FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid""",
    }
    with psycopg.connect(url) as conn:
        return {name: sorted(conn.execute(q).fetchall(), key=repr) for name, q in queries.items()}


def write_migration(root: Path, app: str, name: str, up: str, down: str | None = None) -> Path:
    (root / app).mkdir(parents=True, exist_ok=True)
    path = root / app / f"{name}.up.sql"
    path.write_text(up)
    if down is not None:
        (root / app / f"{name}.down.sql").write_text(down)
    return path


def ledger_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT app, version, checksum FROM hrms_meta.migration_ledger ORDER BY app, version").fetchall()


def test_apply_revert_apply_leaves_an_identical_schema(empty_database_url, migrations):
    with psycopg.connect(empty_database_url) as conn:
        applied = runner.apply(conn, migrations, log=quiet)
        assert [a.migration.label for a in applied] == [m.label for m in migrations]
        assert runner.verify(conn, migrations).ok
    first = catalogue(empty_database_url)
    assert len(first["columns"]) > 200 and first["grants"], "the schema should be the whole data model"

    with psycopg.connect(empty_database_url) as conn:
        reverted = runner.revert(conn, migrations, app=None, target="zero", log=quiet)
        assert len(reverted) == len(migrations)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'hrms'").fetchone()[0] == 0
        assert runner.read_ledger(conn) == {}

    with psycopg.connect(empty_database_url) as conn:
        runner.apply(conn, migrations, log=quiet)
    assert catalogue(empty_database_url) == first


def test_dependency_order_respects_cross_app_references(migrations):
    position = {m.key: i for i, m in enumerate(migrations)}
    for m in migrations:
        for dep in m.depends_on:
            assert position[dep] < position[m.key], f"{m.label} runs before its dependency {dep}"
    assert position[("employees", "0001")] > position[("org", "0001")]


def test_a_changed_applied_file_is_refused_naming_it(empty_database_url, tmp_path):
    path = write_migration(tmp_path, "extra", "0001_first", "CREATE TABLE public.extra_one (id int);")
    with psycopg.connect(empty_database_url) as conn:
        runner.apply(conn, files.discover(tmp_path), log=quiet)
    before = ledger_rows(empty_database_url)
    path.write_text("CREATE TABLE public.extra_one (id bigint);")
    write_migration(tmp_path, "extra", "0002_second", "CREATE TABLE public.extra_two (id int);")
    with psycopg.connect(empty_database_url) as conn, pytest.raises(files.MigrationError) as excinfo:
        runner.apply(conn, files.discover(tmp_path), log=quiet)
    assert "changed since it was applied" in str(excinfo.value)
    assert str(path) in str(excinfo.value)
    assert ledger_rows(empty_database_url) == before
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.extra_two')").fetchone()[0] is None


def test_a_syntax_error_names_file_and_line_and_applies_nothing(empty_database_url, tmp_path):
    write_migration(tmp_path, "extra", "0001_good", "CREATE TABLE public.good_one (id int);")
    bad = write_migration(
        tmp_path, "extra", "0002_bad",
        "CREATE TABLE public.half_done (id int);\n\n-- a typo three lines down\nCREAT TABLE public.broken (id int);\n",
    )
    with psycopg.connect(empty_database_url) as conn, pytest.raises(files.MigrationError) as excinfo:
        runner.apply(conn, files.discover(tmp_path), log=quiet)
    message = str(excinfo.value)
    assert f"{bad}:4:" in message and "syntax error" in message and "CREAT" in message
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.half_done')").fetchone()[0] is None
        # migrations before the broken one were applied and recorded; the broken one left nothing
        assert [r[:2] for r in runner.read_ledger(conn)] == [("extra", "0001")]


def test_a_runtime_error_rolls_back_the_whole_migration(empty_database_url, tmp_path):
    bad = write_migration(
        tmp_path, "extra", "0001_half",
        "CREATE TABLE public.first_half (id int);\nINSERT INTO public.missing_table VALUES (1);\n",
    )
    with psycopg.connect(empty_database_url) as conn, pytest.raises(files.MigrationError) as excinfo:
        runner.apply(conn, files.discover(tmp_path), log=quiet)
    assert f"{bad}:2:" in str(excinfo.value)
    assert 'relation "public.missing_table" does not exist' in str(excinfo.value)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.first_half')").fetchone()[0] is None
        assert runner.read_ledger(conn) == {}


def test_lock_timeout_names_the_migration_and_the_table(database_url, tmp_path):
    path = write_migration(tmp_path, "extra", "0001_add_column",
                           "-- adds a column\nALTER TABLE hrms.org_team ADD COLUMN nickname text;\n")
    before = ledger_rows(database_url)
    with psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE hrms.org_team IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(database_url) as conn, pytest.raises(files.MigrationError) as excinfo:
            runner.apply(conn, files.discover(tmp_path), timeouts=SHORT_LOCK_WAIT, log=quiet)
        holder.rollback()
    message = str(excinfo.value)
    assert f"{path}:2:" in message
    assert "lock timeout" in message and "hrms.org_team" in message and "300ms" in message
    assert ledger_rows(database_url) == before
    with psycopg.connect(database_url) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'hrms' AND table_name = 'org_team'"
        ).fetchall()
    assert ("nickname",) not in columns


def test_statement_timeout_stops_a_long_statement(database_url, tmp_path):
    path = write_migration(tmp_path, "extra", "0001_slow",
                           "CREATE TABLE public.slow_one (id int);\nSELECT pg_sleep(5);\n")
    before = ledger_rows(database_url)
    with psycopg.connect(database_url) as conn, pytest.raises(files.MigrationError) as excinfo:
        runner.apply(conn, files.discover(tmp_path), timeouts=SHORT_STATEMENTS, log=quiet)
    message = str(excinfo.value)
    assert f"{path}:2:" in message and "statement timeout" in message and "300ms" in message
    assert ledger_rows(database_url) == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.slow_one')").fetchone()[0] is None


def test_two_runners_at_once_apply_each_migration_exactly_once(empty_database_url, migrations):
    results: list[list[runner.Applied]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            with psycopg.connect(empty_database_url) as conn:
                barrier.wait()
                results.append(runner.apply(conn, migrations, log=quiet))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied_counts = sorted(len(r) for r in results)
    assert applied_counts == [0, len(migrations)]
    assert len(ledger_rows(empty_database_url)) == len(migrations)


def test_non_transactional_migration_runs_outside_a_transaction(database_url, tmp_path):
    write_migration(
        tmp_path, "extra", "0001_concurrent",
        "-- hrms:non-transactional\nCREATE INDEX CONCURRENTLY IF NOT EXISTS org_team_name_idx ON hrms.org_team (name);\n",
        down="-- hrms:non-transactional\nDROP INDEX CONCURRENTLY IF EXISTS hrms.org_team_name_idx;\n",
    )
    ms = files.discover(tmp_path)
    assert ms[0].transactional is False
    with psycopg.connect(database_url) as conn:
        runner.apply(conn, ms, log=quiet)
        assert conn.execute("SELECT to_regclass('hrms.org_team_name_idx')").fetchone()[0] is not None
        runner.revert(conn, ms, app="extra", target="zero", log=quiet)
        assert conn.execute("SELECT to_regclass('hrms.org_team_name_idx')").fetchone()[0] is None


def test_revert_to_a_target_version(empty_database_url, tmp_path):
    for n in (1, 2, 3):
        write_migration(tmp_path, "extra", f"000{n}_t{n}", f"CREATE TABLE public.t{n} (id int);",
                        down=f"DROP TABLE public.t{n};")
    ms = files.discover(tmp_path)
    with psycopg.connect(empty_database_url) as conn:
        runner.apply(conn, ms, log=quiet)
        reverted = runner.revert(conn, ms, app="extra", target="0001", log=quiet)
        assert [m.label for m in reverted] == ["extra/0003_t3", "extra/0002_t2"]
        assert conn.execute("SELECT to_regclass('public.t1') IS NOT NULL, to_regclass('public.t2') IS NULL").fetchone() == (True, True)
        assert list(runner.read_ledger(conn)) == [("extra", "0001")]


def test_revert_refuses_a_migration_without_down_file_and_reverts_nothing(empty_database_url, tmp_path):
    write_migration(tmp_path, "extra", "0001_one", "CREATE TABLE public.r1 (id int);", down="DROP TABLE public.r1;")
    write_migration(tmp_path, "extra", "0002_two", "CREATE TABLE public.r2 (id int);")  # irreversible
    write_migration(tmp_path, "extra", "0003_three", "CREATE TABLE public.r3 (id int);", down="DROP TABLE public.r3;")
    ms = files.discover(tmp_path)
    with psycopg.connect(empty_database_url) as conn:
        runner.apply(conn, ms, log=quiet)
        with pytest.raises(files.MigrationError) as excinfo:
            runner.revert(conn, ms, app="extra", target="zero", log=quiet)
        assert "extra/0002_two has no down file" in str(excinfo.value)
        assert "0002_two.down.sql" in str(excinfo.value)
        assert len(runner.read_ledger(conn)) == 3
        assert conn.execute("SELECT to_regclass('public.r3') IS NOT NULL").fetchone()[0]


def test_revert_to_an_unknown_target_is_a_clear_error(database_url, migrations):
    with psycopg.connect(database_url) as conn:
        with pytest.raises(files.MigrationError, match=r"unknown target payroll/0042: payroll has versions 0001, 0002"):
            runner.revert(conn, migrations, app="payroll", target="0042", log=quiet)
        with pytest.raises(files.MigrationError, match=r"unknown app 'nope'"):
            runner.revert(conn, migrations, app="nope", target="zero", log=quiet)
        with pytest.raises(files.MigrationError, match=r"applied migration employees/0001_employees depends on it"):
            runner.revert(conn, migrations, app="org", target="zero", log=quiet)


def test_single_app_run_brings_its_dependencies(empty_database_url, migrations):
    with psycopg.connect(empty_database_url) as conn:
        applied = runner.apply(conn, migrations, app="ladders", log=quiet)
    assert [a.migration.label for a in applied] == ["core/0001_foundation", "imports/0001_import_records", "ladders/0001_ladders"]


def test_verify_reports_an_invalid_index_and_an_unvalidated_foreign_key(database_url, migrations):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE hrms.org_team ADD CONSTRAINT org_team_x_fkey FOREIGN KEY (tribe_id) "
                     "REFERENCES hrms.org_tribe (id) NOT VALID")
        conn.execute("INSERT INTO hrms.org_organization (code, name) VALUES ('O', 'Org')")
        conn.execute("INSERT INTO hrms.org_tribe (code, name, organization_id) VALUES ('T', 'Tribe', "
                     "(SELECT id FROM hrms.org_organization)), ('T2', 'Tribe', (SELECT id FROM hrms.org_organization))")
        with pytest.raises(psycopg.errors.UniqueViolation):
            # a unique index built concurrently over duplicates fails and stays behind INVALID
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY org_tribe_name_uniq ON hrms.org_tribe (name)")
        report = runner.verify(conn, migrations)
    assert report.invalid_indexes == ["hrms.org_tribe_name_uniq"]
    assert report.unvalidated_foreign_keys == ["hrms.org_team.org_team_x_fkey"]
    assert not report.ok and report.pending == [] and report.missing_tables == []


def test_a_non_utf8_migration_file_is_named(tmp_path):
    write_migration(tmp_path, "extra", "0001_latin1", "")
    (tmp_path / "extra" / "0001_latin1.up.sql").write_bytes("-- caf\xe9\nSELECT 1;".encode("latin-1"))
    with pytest.raises(files.MigrationError, match=r"0001_latin1.up.sql: not UTF-8"):
        files.discover(tmp_path)[0].statements()


def test_explicit_transaction_control_in_a_transactional_file_is_refused(empty_database_url, tmp_path):
    path = write_migration(tmp_path, "extra", "0001_commit", "CREATE TABLE public.c1 (id int);\nCOMMIT;\n")
    with psycopg.connect(empty_database_url) as conn, pytest.raises(files.MigrationError) as excinfo:
        runner.apply(conn, files.discover(tmp_path), log=quiet)
    assert f"{path}:2:" in str(excinfo.value) and "transaction" in str(excinfo.value)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.c1')").fetchone()[0] is None
