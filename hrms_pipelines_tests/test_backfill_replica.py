"""The replica-lag throttle against a real streaming standby (pg_basebackup -R of the second test
server): a backfill stops between batches while the standby's replay is paused, says why in its log,
and goes on by itself once replay resumes; a standby that disappears fails the run after a bound,
with its checkpoint intact; a role that cannot read the standbys' lag is refused before any change."""

from __future__ import annotations

import threading

import psycopg
import pytest

from hrms_pipelines.backfills import engine, throttle
from hrms_pipelines.backfills.registry import BackfillError, Options, registry
from hrms_pipelines.resources import PinnedDatabase
from hrms_pipelines_tests.standby import Standby, wait_for

ROWS = 60
# 60 batches of one row with 0.2 s between them: the run cannot end before its standby, whose replay
# is paused, is 0.5 s behind (HRMS_BACKFILL_MAX_REPLICA_LAG in these tests).
SLOW = Options(batch_size=1, sleep_seconds=0.2, target_batch_ms=None, max_active_backends=None, max_lock_wait_ms=None,
               progress_every_seconds=0.2, max_busy_wait_seconds=600)


class EventLog:
    """A log other threads can wait on: `seen(text, times)` is set once `text` was logged that often."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def info(self, msg: str) -> None:
        with self.changed:
            self.lines.append(msg)
            self.changed.notify_all()

    warning = info

    def count(self, text: str) -> int:
        with self.changed:
            return sum(text in line for line in self.lines)

    def wait(self, text: str, times: int = 1, timeout: float = 180.0) -> list[str]:
        with self.changed:
            if not self.changed.wait_for(lambda: sum(text in line for line in self.lines) >= times, timeout=timeout):
                raise AssertionError(f"never logged {text!r} {times} time(s); log:\n" + "\n".join(self.lines))
            return [line for line in self.lines if text in line]


class Run(threading.Thread):
    def __init__(self, db: PinnedDatabase, log: EventLog) -> None:
        super().__init__(daemon=True)
        self.db, self.log = db, log
        self.result: engine.Result | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = engine.run(self.db, registry.get("set_employee_status"), SLOW, log=self.log)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc


@pytest.fixture
def primary(second_server, migrations):
    name = second_server.migrated_database(migrations)
    with psycopg.connect(second_server.url(name), autocommit=True) as conn:
        conn.execute("""INSERT INTO hrms.employees_employee (email, hire_date)
                        SELECT 'r' || n || '@example.org', date '2015-03-01' FROM generate_series(1, %s) n""", [ROWS])
    try:
        yield name
    finally:
        second_server.drop_database(name)


@pytest.fixture
def standby(second_server, primary):
    node = Standby(second_server)
    try:
        yield node.start()
    finally:
        node.remove()


def checkpoint(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT status, last_key, rows_done, batches_done FROM hrms.core_backfillcheckpoint "
                            "WHERE name = 'set_employee_status'").fetchone()


def test_a_backfill_waits_while_a_standby_replays_behind_and_resumes_by_itself(second_server, primary, standby,
                                                                                 monkeypatch):
    monkeypatch.setenv(throttle.MAX_REPLICA_LAG_ENV, "0.5")
    url = second_server.url(primary)
    db = PinnedDatabase(location=second_server.location(primary))
    wait_for("the standby to replay the rows", standby.caught_up)
    standby.pause_replay()

    log = EventLog()
    run = Run(db, log)
    run.start()
    log.wait("streams to 1 standby(s)")
    first = log.wait("paused, replica lag: standby ")[0]
    assert "replays" in first and "s behind" in first and "limit 0.5 s, HRMS_BACKFILL_MAX_REPLICA_LAG" in first
    status, _, done, batches = checkpoint(url)
    assert status == "running" and 0 < done < ROWS and batches == done
    log.wait("paused, replica lag: standby ", times=3)  # still paused, logging as it waits
    assert checkpoint(url)[2] == done and run.is_alive()  # no batch while the standby was behind

    standby.resume_replay()
    run.join(timeout=300)
    assert not run.is_alive() and run.error is None, run.error
    result = run.result
    assert (result.status, result.rows_changed, result.rows_left) == ("completed", ROWS, 0)
    assert result.replica_paused_s > 0 and result.paused_s >= result.replica_paused_s
    assert log.count("resumed after") >= 1 and "(replica lag)" in log.wait("resumed after")[0]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT status, count(*) FROM hrms.employees_employee GROUP BY 1").fetchall() == [("active", ROWS)]
    assert checkpoint(url)[0] == "completed"
    wait_for("the standby to replay the backfill", standby.caught_up)
    with psycopg.connect(standby.url(primary)) as conn:  # and the standby holds every row right too
        assert conn.execute("SELECT status, count(*) FROM hrms.employees_employee GROUP BY 1").fetchall() == [("active", ROWS)]


def test_a_standby_that_disappears_fails_the_run_after_a_bound_with_its_checkpoint_intact(second_server, primary,
                                                                                           standby, monkeypatch):
    monkeypatch.setenv(throttle.MAX_REPLICA_LAG_ENV, "0.5")
    monkeypatch.setenv(throttle.STANDBY_GONE_ENV, "1")
    url = second_server.url(primary)
    standby.pause_replay()
    log = EventLog()
    run = Run(PinnedDatabase(location=second_server.location(primary)), log)
    run.start()
    log.wait("paused, replica lag: standby ")
    standby.stop("immediate")
    run.join(timeout=300)
    assert not run.is_alive()
    assert isinstance(run.error, BackfillError)
    message = str(run.error)
    assert "disconnected" in message and "has not come back within 1 s (HRMS_BACKFILL_STANDBY_GONE_SECONDS)" in message
    assert "checkpoint keeps the place" in message
    assert log.count("disconnected") >= 1
    status, last_key, done, _ = checkpoint(url)
    with psycopg.connect(url) as conn:
        changed, highest = conn.execute(
            "SELECT count(*), max(id) FROM hrms.employees_employee WHERE status = 'active'").fetchone()
    assert status == "failed" and 0 < done < ROWS and (done, last_key) == (changed, highest)


def test_a_role_that_cannot_read_the_standbys_lag_is_refused_before_any_change(second_server, primary, standby):
    url = second_server.url(primary)
    with psycopg.connect(second_server.url(), autocommit=True) as admin:
        admin.execute("REVOKE pg_read_all_stats FROM hrms_monitor")
    try:
        with pytest.raises(BackfillError, match=r"streams to 1 standby\(s\) but hrms_importer cannot read their replay "
                                                r"position .* GRANT pg_read_all_stats TO hrms_monitor"):
            engine.run(PinnedDatabase(location=second_server.location(primary)), registry.get("set_employee_status"),
                       SLOW, log=EventLog())
    finally:
        with psycopg.connect(second_server.url(), autocommit=True) as admin:
            admin.execute("GRANT pg_read_all_stats TO hrms_monitor")
    assert checkpoint(url) is None
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE status IS NOT NULL").fetchone()[0] == 0
