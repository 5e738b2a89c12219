"""Two imports at once outside Dagster's run queue (`dagster job execute`): the second waits for the
`imports` lock up to HRMS_IMPORT_LOCK_WAIT, saying whom it waits for, then imports; with too short a
wait it fails with one sentence. Real PostgreSQL, real stages in threads; every wait in these tests
is for a condition, bounded only so that a bug fails the test instead of hanging it."""

import os
import subprocess
import threading
import time

import psycopg
import pytest

from hrms_pipelines import locks, settings
from hrms_pipelines.imports import ladders, stage
from hrms_pipelines.imports.options import ImportOptions
from hrms_pipelines.resources import IMPORTER, MIGRATOR

from .import_helpers import BASE, ListLog, checksums, write, write_base

BOUND = 120  # seconds: only ever reached when something is broken

MORE_LADDERS = BASE["ladders.csv"] + [["", "ENG", "", "", "", "4", "Staff Engineer", "P4", "9000.00", "12000.00"]]


def wait_until(condition, what: str):
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class StageThread(threading.Thread):
    """`stage.run` of the ladders stage in a thread, as a second process would run it."""

    def __init__(self, hrms_db, run_id: str, **options):
        super().__init__(daemon=True)
        self.hrms_db, self.run_id, self.options = hrms_db, run_id, ImportOptions(**options)
        self.log = ListLog()
        self.result = self.error = None

    def run(self):
        try:
            self.result = stage.run(self.hrms_db, ladders.STAGE, self.options, run_id=self.run_id,
                                    log=stage.StageLog(self.log, stage="ladders"))
        except Exception as exc:  # noqa: BLE001 -- handed to the test
            self.error = exc

    def said(self, text: str) -> list[str]:
        return [message for _level, message in self.log.lines if text in message]

    def finish(self):
        self.join(BOUND)
        assert not self.is_alive(), f"{self.run_id} still running"
        return self


def imports_lock_holders(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND objid::bigint = %s",
            [locks._key(locks.IMPORTS) & 0xFFFFFFFF]).fetchall()]


def sessions(url: str, application_name: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pid, state FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = %s", [application_name]).fetchall()


def test_a_second_import_waits_for_the_first_then_imports_after_it_commits(hrms_db, database_url, tmp_path, import_dir,
                                                                          monkeypatch):
    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "5min")
    folder = import_dir(write_base(tmp_path / "in"))
    write(folder, "ladders_more.csv", MORE_LADDERS)

    # The first import is held up inside its stage: an administrator holds a table lock it needs.
    with psycopg.connect(database_url) as admin:
        admin.execute("LOCK TABLE hrms.ladders_ladder IN EXCLUSIVE MODE")
        first = StageThread(hrms_db, "run-first", ladders_file="ladders.csv", lock_timeout="5min")
        first.start()
        wait_until(lambda: imports_lock_holders(database_url), "the first import to take the imports lock")
        [first_pid] = imports_lock_holders(database_url)

        second = StageThread(hrms_db, "run-second", ladders_file="ladders_more.csv")
        second.start()
        wait_until(lambda: second.said("waiting up to"), "the second import to say that it waits")
        [line] = second.said("waiting up to")
        assert "waiting up to 5min (HRMS_IMPORT_LOCK_WAIT) for the 'imports' lock, held by" in line
        assert f"pid {first_pid}, application_name 'hrms_pipelines:importer:run-first', role hrms_importer, " \
               "in a transaction since " in line
        # it waits outside any transaction (each try is a transaction of its own that ends at once)
        wait_until(lambda: any(state == "idle" for pid, state in sessions(database_url, "hrms_pipelines:importer")
                               if pid != first_pid), "the waiting import's session to be seen outside a transaction")
        assert second.is_alive() and second.result is None
    # the administrator's lock is gone: the first import goes on and commits, then the second imports

    first.finish()
    second.finish()
    assert first.error is None and second.error is None, (first.error, second.error)
    assert first.result.counts["inserted"] == 5
    assert second.result.counts["inserted"] == 1 and second.result.counts["unchanged"] == 5
    assert second.said("got the 'imports' lock after waiting")
    with psycopg.connect(database_url) as conn:
        records = conn.execute("SELECT file_name, run_id, outcome FROM hrms.imports_importrecord ORDER BY id").fetchall()
        levels = conn.execute("SELECT count(*) FROM hrms.ladders_level").fetchone()[0]
    assert records == [("ladders.csv", "run-first", "succeeded"), ("ladders_more.csv", "run-second", "succeeded")]
    assert levels == 4


def hold_lock(hrms_db, name: str, application_name: str):
    """A session holding the named lock in an open transaction, as a running import does; the
    transaction ends with `holder.__exit__(None, None, None)`."""
    holder = hrms_db.transaction(IMPORTER)
    conn = holder.__enter__()
    conn.execute("SELECT set_config('application_name', %s, true)", [application_name])
    locks.transaction_lock(conn, name).__enter__()
    return conn, holder


def hold_imports_lock(hrms_db, application_name: str):
    return hold_lock(hrms_db, locks.IMPORTS, application_name)


def test_with_a_short_wait_the_second_import_fails_with_one_sentence_and_changes_nothing(
        hrms_db, database_url, tmp_path, import_dir, monkeypatch):
    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "1s")
    import_dir(write_base(tmp_path / "in"))
    before = checksums(database_url)
    conn, holder = hold_imports_lock(hrms_db, "hrms_pipelines:importer:run-holder")
    try:
        second = StageThread(hrms_db, "run-second")
        second.start()
        second.finish()
    finally:
        holder.__exit__(None, None, None)

    message = str(second.error)
    assert isinstance(second.error, locks.LockNotAvailable)
    assert message.startswith("Another run still holds the 'imports' lock after waiting 1s (HRMS_IMPORT_LOCK_WAIT): "
                              f"pid {conn.info.backend_pid}, application_name 'hrms_pipelines:importer:run-holder', "
                              "role hrms_importer, in a transaction since ")
    assert message.endswith("; try again when it has finished, or set HRMS_IMPORT_LOCK_WAIT longer.")
    assert "\n" not in message and "psycopg" not in message
    assert second.said("waiting up to 1s (HRMS_IMPORT_LOCK_WAIT) for the 'imports' lock")
    assert checksums(database_url) == before
    with psycopg.connect(database_url) as c:
        assert c.execute("SELECT outcome, message FROM hrms.imports_importrecord").fetchall() == [("failed", message)]


def test_no_wait_fails_at_once(hrms_db, tmp_path, import_dir, monkeypatch):
    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "0")
    import_dir(write_base(tmp_path / "in"))
    _conn, holder = hold_imports_lock(hrms_db, "hrms_pipelines:importer:run-holder")
    try:
        second = StageThread(hrms_db, "run-second")
        second.run()
    finally:
        holder.__exit__(None, None, None)
    assert str(second.error).startswith("Another run still holds the 'imports' lock (HRMS_IMPORT_LOCK_WAIT=0: no wait): pid ")
    assert not second.said("waiting up to")


def test_an_unreadable_wait_names_the_variable(monkeypatch):
    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "five minutes")
    with pytest.raises(ValueError, match=r"HRMS_IMPORT_LOCK_WAIT='five minutes' is not a duration: use e.g. 0, 500ms, 30s"):
        settings.import_lock_wait()


def test_a_seed_waits_for_the_seeds_lock_the_same_way(hrms_db, monkeypatch):
    from hrms_pipelines.seeding import loader
    from hrms_pipelines.seeding.fixtures import FixtureError

    heard = []
    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "1s")
    with hrms_db.transaction(IMPORTER) as holder, locks.transaction_lock(holder, locks.SEEDS):
        with pytest.raises(FixtureError, match=r"^Another run still holds the 'seeds' lock after waiting 1s "
                                               rf"\(HRMS_IMPORT_LOCK_WAIT\): pid {holder.info.backend_pid}, "):
            loader.load_fixtures(hrms_db, ["leave_types"], environment="development", log=heard.append)
    assert any(line.startswith("waiting up to 1s (HRMS_IMPORT_LOCK_WAIT) for the 'seeds' lock") for line in heard)

    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "5min")
    heard.clear()
    results = []
    _conn, holder = hold_lock(hrms_db, locks.SEEDS, "hrms_pipelines:importer:run-holder")
    seeding = threading.Thread(daemon=True, target=lambda: results.extend(
        loader.load_fixtures(hrms_db, ["leave_types"], environment="development", log=heard.append)))
    seeding.start()
    wait_until(lambda: any(line.startswith("waiting up to 5min") for line in heard), "the seed to wait")
    holder.__exit__(None, None, None)
    seeding.join(BOUND)
    assert [r.fixture.key for r in results] == ["leave_types"] and results[0].inserted


PROBE_INDEX = "CREATE INDEX CONCURRENTLY ladders_level_title_probe ON hrms.ladders_level (title)"


def test_a_waiting_import_does_not_hold_up_create_index_concurrently(hrms_db, tmp_path, import_dir, monkeypatch):
    """CREATE INDEX CONCURRENTLY waits for every transaction that holds a snapshot older than its own.
    A run that holds the imports lock for its session and builds an index concurrently (as the
    migration runner does under its own lock) would deadlock against an import that waited for the
    lock inside a transaction. The waiting import holds no transaction between its tries: the index
    is built while it waits, then it imports."""
    monkeypatch.setenv(settings.IMPORT_LOCK_WAIT_ENV, "5min")
    import_dir(write_base(tmp_path / "in"))
    with hrms_db.connection(MIGRATOR, autocommit=True) as ddl, locks.session_lock(ddl, locks.IMPORTS):
        waiting = StageThread(hrms_db, "run-waiting")
        waiting.start()
        wait_until(lambda: waiting.said("waiting up to"), "the import to wait")
        ddl.execute(f"SET lock_timeout = '{BOUND}s'")
        ddl.execute(PROBE_INDEX)
        assert ddl.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'hrms.ladders_level_title_probe'::regclass"
                           ).fetchone()[0]
        assert waiting.is_alive() and not waiting.said("got the 'imports' lock")
    waiting.finish()
    assert waiting.error is None and waiting.result.counts["inserted"] == 5


def test_control_waiting_inside_a_transaction_would_hold_up_create_index_concurrently(hrms_db):
    """The control for the test above: a session that tried the lock inside its transaction (as
    `pg_try_advisory_xact_lock` in a loop would) keeps a snapshot while idle in that transaction,
    and the concurrent index build waits for it (here until its lock_timeout)."""
    with hrms_db.connection(MIGRATOR, autocommit=True) as ddl, locks.session_lock(ddl, locks.IMPORTS):
        with hrms_db.transaction(IMPORTER) as naive:
            tried = naive.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [locks._LOCK_CLASS, locks._key(locks.IMPORTS)])
            assert tried.fetchone()[0] is False
            ddl.execute("SET lock_timeout = '1s'")
            with pytest.raises(psycopg.errors.LockNotAvailable, match="lock timeout"):
                ddl.execute(PROBE_INDEX)


def test_dagster_job_execute_waits_then_fails_with_the_sentence_not_a_traceback(
        hrms_db, subprocess_env, project_root, tmp_path):
    folder = write_base(tmp_path / "in")
    (tmp_path / "dagster_home").mkdir()
    config = tmp_path / "ladders_only.yaml"
    config.write_text("resources:\n  hrms_import_options:\n    config:\n      org_files: []\n"
                      "      users_file: ''\n      history_file: ''\n")
    env = {**subprocess_env, settings.IMPORT_DIR_ENV: str(folder), settings.IMPORT_LOCK_WAIT_ENV: "1s",
           "DAGSTER_HOME": str(tmp_path / "dagster_home"),
           **{name: os.environ[name] for name in (settings.HOME_ENV, settings.BACKUP_DIR_ENV, settings.LOGS_DIR_ENV,
                                                  settings.REJECTS_DIR_ENV, settings.KEYS_DIR_ENV)}}
    conn, holder = hold_imports_lock(hrms_db, "hrms_pipelines:importer:run-holder")
    try:
        run = subprocess.run([str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines",
                              "-j", "hrms_import", "-c", str(config)], env=env, cwd=project_root,
                             capture_output=True, text=True, timeout=600)
    finally:
        holder.__exit__(None, None, None)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "waiting up to 1s (HRMS_IMPORT_LOCK_WAIT) for the 'imports' lock, held by " \
           f"pid {conn.info.backend_pid}, application_name 'hrms_pipelines:importer:run-holder'" in output
    assert "Another run still holds the 'imports' lock after waiting 1s (HRMS_IMPORT_LOCK_WAIT)" in output
    assert "psycopg.errors" not in output and "LockNotAvailable" not in output
