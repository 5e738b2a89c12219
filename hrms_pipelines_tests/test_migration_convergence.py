"""The runner converges after an interrupted concurrent build (issue 13): a `CREATE INDEX
CONCURRENTLY IF NOT EXISTS` (payroll/0002's own pattern) interrupted for real -- its backend
terminated, or the server stopped with `-m immediate` -- leaves an INVALID index; a plain re-run
drops it, builds it again, and only then writes the ledger row."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from hrms_pipelines import roles
from hrms_pipelines.migrations import files, runner
from hrms_pipelines_tests.conftest import project_copy

INDEX = "payroll_payslipline_total_idx"
UP = ("-- hrms:non-transactional\n"
      f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON hrms.payroll_payslipline (line_total);\n")
DOWN = f"-- hrms:non-transactional\nDROP INDEX CONCURRENTLY IF EXISTS hrms.{INDEX};\n"


def quiet(*_args) -> None:
    pass


def with_new_migration(tmp_path: Path) -> list[files.Migration]:
    """The project's migrations (applied in the test database) and one pending concurrent build."""
    root = project_copy(tmp_path / "migrations")
    (root / "payroll" / "0100_line_total_idx.up.sql").write_text(UP)
    (root / "payroll" / "0100_line_total_idx.down.sql").write_text(DOWN)
    return files.discover(root)


def index_state(url: str) -> bool | None:
    """None: no such index; else whether it is valid."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
                           [f"hrms.{INDEX}"]).fetchone()
    return None if row is None else row[0]


def ledger_has_it(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM hrms_meta.migration_ledger WHERE app = 'payroll' AND version = '0100'"
                            ).fetchone()[0] == 1


def build_waiting_on_a_writer(url: str, migrations) -> tuple[threading.Thread, list, psycopg.Connection, int]:
    """Start the runner in a thread while another session holds a write lock on the table: the
    concurrent build creates its (INVALID) index, then waits for that writer. Returns when it waits."""
    writer = psycopg.connect(url)
    writer.execute("LOCK TABLE hrms.payroll_payslipline IN ROW EXCLUSIVE MODE")  # an open writing transaction
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
                runner.apply(conn, migrations, log=quiet)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as watcher:
        while True:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%%' "
                "AND wait_event_type IN ('Lock') AND usename = %s", [roles.MIGRATOR.role]).fetchone()
            if row:
                return thread, errors, writer, row[0]
            assert time.monotonic() < deadline, "the concurrent build never started waiting"
            time.sleep(0.02)


def converges(url: str, migrations) -> None:
    """A plain re-run: the INVALID index is rebuilt, the ledger row written, verification passes."""
    logged: list[str] = []
    with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
        applied = runner.apply(conn, migrations, log=logged.append)
        assert [a.migration.label for a in applied] == ["payroll/0100_line_total_idx"]
        assert runner.verify(conn, migrations).ok, runner.verify(conn, migrations).problems()
    assert any("dropping INVALID index" in line for line in logged), logged
    assert index_state(url) is True and ledger_has_it(url)
    # and a second run has nothing left to do
    with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
        assert runner.apply(conn, migrations, log=quiet) == []


def test_a_terminated_backend_mid_build_then_a_plain_rerun(database_url, tmp_path):
    migrations = with_new_migration(tmp_path)
    thread, errors, writer, pid = build_waiting_on_a_writer(database_url, migrations)
    assert index_state(database_url) is False  # created, not yet built: what an interruption leaves behind
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    thread.join(30)
    writer.rollback()
    writer.close()
    assert errors and isinstance(errors[0], files.MigrationError), errors
    assert "INVALID index" in str(errors[0]) and INDEX in str(errors[0])
    assert index_state(database_url) is False and not ledger_has_it(database_url)
    converges(database_url, migrations)


def test_a_server_stopped_immediately_mid_build_then_a_plain_rerun(second_server, migrations, tmp_path):
    name = second_server.migrated_database(migrations)
    url = second_server.url(name)
    try:
        pending = with_new_migration(tmp_path)
        thread, errors, writer, _pid = build_waiting_on_a_writer(url, pending)
        second_server.crash_and_restart()
        thread.join(30)
        with pytest.raises(psycopg.OperationalError):  # the crash took every session with it
            writer.execute("SELECT 1")
        writer.close()
        assert errors, "the runner did not notice the server going away"
        assert index_state(url) is False and not ledger_has_it(url)
        converges(url, pending)
    finally:
        second_server.drop_database(name)


def test_the_ledger_waits_for_every_index_of_the_file(database_url, tmp_path):
    """An INVALID index the file's own statements cannot rebuild (it already exists under that name,
    and a later statement makes it invalid) keeps the ledger row from being written."""
    root = tmp_path / "m"
    (root / "x").mkdir(parents=True)
    (root / "x" / "0001_idx.up.sql").write_text(
        "-- hrms:non-transactional\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS org_team_name_idx ON hrms.org_team (name);\n"
        "UPDATE pg_catalog.pg_index SET indisvalid = false WHERE indexrelid = 'hrms.org_team_name_idx'::regclass;\n")
    migrations = files.discover(root)
    with psycopg.connect(database_url) as conn:  # the test server's superuser may write pg_index
        with pytest.raises(files.MigrationError, match="INVALID index.*org_team_name_idx"):
            runner.apply(conn, migrations, log=quiet)
        assert ("x", "0001") not in runner.read_ledger(conn)
