"""`REINDEX CONCURRENTLY` converges like `CREATE INDEX CONCURRENTLY` (issue 18 item 5): interrupted for
real -- its backend terminated, or the server stopped with `-m immediate` -- it leaves `<index>_ccnew`
INVALID; a plain re-run drops it (concurrently), reindexes again, writes the ledger row only then, and
verification passes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from hrms_pipelines import roles
from hrms_pipelines.migrations import files, runner
from hrms_pipelines_tests.conftest import project_copy

INDEX = "payroll_payslipline_pkey"
UP = f"-- hrms:non-transactional\nREINDEX INDEX CONCURRENTLY hrms.{INDEX};\n"
DOWN = "SELECT 1;\n"


def quiet(*_args) -> None:
    pass


def with_reindex(tmp_path: Path) -> list[files.Migration]:
    root = project_copy(tmp_path / "migrations")
    (root / "payroll" / "0100_reindex_lines.up.sql").write_text(UP)
    (root / "payroll" / "0100_reindex_lines.down.sql").write_text(DOWN)
    return files.discover(root)


def leftovers(url: str) -> list[tuple[str, bool]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE %s ORDER BY 1", [INDEX + "_cc%"]).fetchall()


def ledger_has_it(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM hrms_meta.migration_ledger WHERE app = 'payroll' AND version = '0100'"
                            ).fetchone()[0] == 1


def reindex_waiting_on_a_writer(url: str, migrations) -> tuple[threading.Thread, list, psycopg.Connection, int]:
    """The runner in a thread while another session holds a write lock on the table: the reindex creates
    its `_ccnew` copy, then waits for that writer before building it. Returns once it waits (a readiness
    signal read from pg_stat_activity, not a sleep)."""
    writer = psycopg.connect(url)
    writer.execute("LOCK TABLE hrms.payroll_payslipline IN ROW EXCLUSIVE MODE")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
                runner.apply(conn, migrations, log=quiet)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as watcher:
        while True:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'REINDEX INDEX CONCURRENTLY%%' "
                "AND wait_event_type = 'Lock' AND usename = %s", [roles.MIGRATOR.role]).fetchone()
            if row:
                return thread, errors, writer, row[0]
            assert thread.is_alive() or errors, "the runner ended without reindexing"
            assert not errors, errors
            assert time.monotonic() < deadline, "the reindex never started waiting"
            time.sleep(0.02)


def converges(url: str, migrations) -> None:
    logged: list[str] = []
    with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
        applied = runner.apply(conn, migrations, log=logged.append)
        assert [a.migration.label for a in applied] == ["payroll/0100_reindex_lines"]
        assert runner.verify(conn, migrations).ok, runner.verify(conn, migrations).problems()
    assert any("dropping INVALID index" in line and "_ccnew" in line for line in logged), logged
    assert leftovers(url) == [] and ledger_has_it(url)
    with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
        assert runner.apply(conn, migrations, log=quiet) == []


def test_a_terminated_reindex_then_a_plain_rerun(database_url, tmp_path):
    migrations = with_reindex(tmp_path)
    thread, errors, writer, pid = reindex_waiting_on_a_writer(database_url, migrations)
    assert leftovers(database_url) == [(INDEX + "_ccnew", False)]  # what an interruption leaves behind
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    thread.join(60)
    writer.rollback()
    writer.close()
    assert errors and isinstance(errors[0], files.MigrationError), errors
    assert leftovers(database_url) == [(INDEX + "_ccnew", False)] and not ledger_has_it(database_url)
    with psycopg.connect(database_url) as conn:  # verify reports it until the re-run
        assert not runner.verify(conn, migrations).ok
    converges(database_url, migrations)


def test_a_server_stopped_immediately_mid_reindex_then_a_plain_rerun(second_server, migrations, tmp_path):
    name = second_server.migrated_database(migrations)
    url = second_server.url(name)
    try:
        pending = with_reindex(tmp_path)
        thread, errors, writer, _pid = reindex_waiting_on_a_writer(url, pending)
        second_server.crash_and_restart()
        thread.join(60)
        with pytest.raises(psycopg.OperationalError):
            writer.execute("SELECT 1")
        writer.close()
        assert errors, "the runner did not notice the server going away"
        assert leftovers(url) == [(INDEX + "_ccnew", False)] and not ledger_has_it(url)
        converges(url, pending)
    finally:
        second_server.drop_database(name)

