"""The backfill engine against the real PostgreSQL: keyset batches, checkpoint, resume, restart,
dry run, idempotence, throttling (adaptive size, busy pause, retries) and the built-in backfills."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from hrms_pipelines import locks
from hrms_pipelines.backfills import engine, throttle
from hrms_pipelines.backfills.registry import BackfillError, BackfillRegistry, Options, UnknownBackfill, registry

FAST = Options(batch_size=7, sleep_seconds=0, target_batch_ms=None, max_active_backends=None, max_lock_wait_ms=None)


class ListLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    warning = info

    def text(self) -> str:
        return "\n".join(self.lines)


def add_employees(conn: psycopg.Connection, count: int, *, status: str | None = None, placeholder: bool = False,
                  hire_date: str | None = "2015-03-01", termination_date: str | None = None, prefix: str = "e") -> None:
    conn.execute(
        """INSERT INTO hrms.employees_employee (email, status, is_placeholder, hire_date, termination_date)
           SELECT %(prefix)s || n || '-' || md5(random()::text) || '@example.org', %(status)s, %(placeholder)s,
                  %(hire)s::date, %(term)s::date
           FROM generate_series(1, %(count)s) n""",
        {"prefix": prefix, "status": status, "placeholder": placeholder, "hire": hire_date, "term": termination_date,
         "count": count},
    )


def run_sql(url: str, query: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(query)


def checkpoint(conn: psycopg.Connection, name: str) -> tuple:
    return conn.execute("SELECT status, last_key, rows_done, batches_done FROM hrms.core_backfillcheckpoint WHERE name = %s",
                        [name]).fetchone()


def test_set_employee_status_changes_only_rows_that_need_it_and_a_rerun_does_nothing(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 25, prefix="new")
        add_employees(conn, 5, prefix="left", termination_date="2020-01-31")
        add_employees(conn, 10, status="suspended", prefix="susp")
        add_employees(conn, 10, placeholder=True, hire_date=None, prefix="ph")
    log = ListLog()
    result = engine.run(hrms_db, registry.get("set_employee_status"), FAST, log=log)

    assert (result.status, result.rows_changed, result.batches, result.rows_left) == ("completed", 30, 5, 0)
    with psycopg.connect(database_url) as conn:
        statuses = dict(conn.execute(
            "SELECT coalesce(status, 'NULL') || ':' || is_placeholder, count(*) FROM hrms.employees_employee GROUP BY 1").fetchall())
        assert statuses == {"active:false": 25, "terminated:false": 5, "suspended:false": 10, "NULL:true": 10}
        status, last_key, rows_done, batches_done = checkpoint(conn, "set_employee_status")
        assert (status, rows_done, batches_done) == ("completed", 30, 5)
        assert last_key == conn.execute(
            "SELECT max(id) FROM hrms.employees_employee WHERE status IN ('active', 'terminated')").fetchone()[0]
        audit = conn.execute("""SELECT count(*), sum((after->>'rows_changed')::int) FROM hrms.core_auditlog
                                WHERE action = 'backfill' AND source = 'backfill:set_employee_status'""").fetchone()
        assert audit == (5, 30)
        before = conn.execute("SELECT array_agg(updated_at ORDER BY id) FROM hrms.employees_employee").fetchone()[0]

    again = engine.run(hrms_db, registry.get("set_employee_status"), FAST, log=log)
    assert (again.status, again.rows_changed, again.batches) == ("completed", 0, 0)
    with psycopg.connect(database_url) as conn:
        after = conn.execute("SELECT array_agg(updated_at ORDER BY id) FROM hrms.employees_employee").fetchone()[0]
        assert after == before
        assert checkpoint(conn, "set_employee_status")[2:] == (30, 5)
    assert "rows changed in 5 batches" in log.text()


def test_dry_run_counts_what_would_change_and_writes_nothing(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 12)
        add_employees(conn, 3, status="active", prefix="a")
    log = ListLog()
    result = engine.run(hrms_db, registry.get("set_employee_status"), FAST, log=log, dry_run=True)
    assert (result.status, result.would_change, result.rows_left, result.rows_changed) == ("dry_run", 12, 12, 0)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE status IS NULL").fetchone()[0] == 12
        assert checkpoint(conn, "set_employee_status") is None
        assert conn.execute("SELECT count(*) FROM hrms.core_auditlog").fetchone()[0] == 0
    assert "12 rows of hrms.employees_employee would change" in log.text()


def test_stops_after_max_batches_resumes_from_the_checkpoint_and_restart_sweeps_again(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 30, hire_date="2010-06-15")
        add_employees(conn, 10, hire_date="2019-01-01", termination_date="2021-01-01", prefix="x")
    tenure = registry.get("compute_employee_tenure")
    options = Options(batch_size=10, sleep_seconds=0, target_batch_ms=None, max_batches=2,
                      max_active_backends=None, max_lock_wait_ms=None)

    first = engine.run(hrms_db, tenure, options, log=ListLog())
    assert (first.status, first.rows_changed, first.resumed_from_key) == ("stopped", 20, None)
    with psycopg.connect(database_url) as conn:
        status, last_key, rows_done, _ = checkpoint(conn, "compute_employee_tenure")
        assert (status, rows_done) == ("running", 20)
        # the checkpoint says exactly which rows are done
        done_ids = [r[0] for r in conn.execute(
            "SELECT id FROM hrms.employees_employee WHERE tenure_years IS NOT NULL ORDER BY id")]
        assert len(done_ids) == 20 and done_ids[-1] == last_key

    second = engine.run(hrms_db, tenure, Options(batch_size=10, sleep_seconds=0, target_batch_ms=None,
                                                 max_active_backends=None, max_lock_wait_ms=None), log=ListLog())
    assert (second.status, second.rows_changed, second.resumed_from_key) == ("completed", 20, last_key)
    with psycopg.connect(database_url, autocommit=True) as conn:
        wrong = conn.execute(
            """SELECT count(*) FROM hrms.employees_employee
               WHERE tenure_years IS DISTINCT FROM round((least(coalesce(termination_date, current_date), current_date)
                                                          - hire_date) / 365.25, 2)""").fetchone()[0]
        assert wrong == 0
        assert conn.execute("SELECT DISTINCT tenure_years FROM hrms.employees_employee WHERE email LIKE 'x%'"
                            ).fetchall() == [(round(731 / 365.25, 2),)]
        assert checkpoint(conn, "compute_employee_tenure")[0::2] == ("completed", 40)
        # rows behind the checkpoint that need the change again: a plain relaunch leaves them and says so
        conn.execute("UPDATE hrms.employees_employee SET tenure_years = NULL WHERE id IN "
                     "(SELECT id FROM hrms.employees_employee ORDER BY id LIMIT 3)")

    log = ListLog()
    third = engine.run(hrms_db, tenure, FAST, log=log)
    assert (third.rows_changed, third.rows_left) == (0, 3)
    assert "launch it with restart: true" in log.text()
    fourth = engine.run(hrms_db, tenure, FAST, log=ListLog(), restart=True)
    assert (fourth.rows_changed, fourth.rows_left, fourth.resumed_from_key) == (3, 0, None)
    with psycopg.connect(database_url) as conn:
        assert checkpoint(conn, "compute_employee_tenure")[2:] == (3, 1)  # restart resets the counters


def make_payslip_lines(conn: psycopg.Connection, count: int) -> None:
    conn.execute("INSERT INTO hrms.employees_employee (email) VALUES ('payee@example.org')")
    conn.execute("INSERT INTO hrms.payroll_payperiod (year, month, starts_on, ends_on) VALUES (2025, 1, '2025-01-01', '2025-01-31')")
    conn.execute("INSERT INTO hrms.payroll_paycomponent (code, name, kind) VALUES ('BASIC', 'Basic salary', 'earning')")
    conn.execute("""INSERT INTO hrms.payroll_payslip (employee_id, pay_period_id, gross_pay, total_deductions, net_pay)
                    SELECT e.id, p.id, 0, 0, 0 FROM hrms.employees_employee e, hrms.payroll_payperiod p
                    WHERE e.email = 'payee@example.org'""")
    conn.execute(
        """INSERT INTO hrms.payroll_payslipline (payslip_id, pay_component_id, amount, quantity)
           SELECT (SELECT id FROM hrms.payroll_payslip), (SELECT id FROM hrms.payroll_paycomponent),
                  (n * 7.13) %% 5000, 1 + (n %% 4) * 0.5
           FROM generate_series(1, %s) n""", [count])


def test_payslip_line_total_backfill_adapts_its_batch_size(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        make_payslip_lines(conn, 3000)
        conn.execute("UPDATE hrms.payroll_payslipline SET line_total = 1 WHERE id % 10 = 0")  # already done
    backfill = registry.get("compute_payslipline_line_total")
    assert backfill.defaults.target_batch_ms == 150  # short batches: p99 well under 250 ms (bench)
    options = backfill.defaults.override(batch_size=50, sleep_seconds=0)
    result = engine.run(hrms_db, backfill, options, log=ListLog())
    assert (result.rows_changed, result.rows_left) == (2700, 0)
    assert result.final_batch_size > 50  # tiny batches are far below 200 ms: the size grew
    with psycopg.connect(database_url) as conn:
        assert conn.execute("""SELECT count(*) FILTER (WHERE line_total = round(amount * quantity, 2)),
                                      count(*) FILTER (WHERE line_total = 1 AND id % 10 = 0)
                               FROM hrms.payroll_payslipline""").fetchone() == (2700, 300)


def test_batch_sizer_moves_toward_the_target_within_bounds():
    sizer = engine.BatchSizer(Options(batch_size=1000, target_batch_ms=200, min_batch_size=100, max_batch_size=3000))
    sizer.record(1000, 50)  # 4x too fast: grows, by at most 1.25x
    assert sizer.size == 1250
    for _ in range(10):
        sizer.record(sizer.size, sizer.size * 0.05)
    assert sizer.size == 3000  # capped
    sizer.record(3000, 1200)  # 6x too slow: halves at most per batch
    assert sizer.size == 1500
    sizes = []
    for _ in range(40):  # then 0.1 ms a row: trusts fast batches gradually, settles at 80% of 200 ms
        sizer.record(sizer.size, sizer.size * 0.1)
        sizes.append(sizer.size)
    assert max(sizes) <= 1600 and sizes[-5:] == sorted(sizes[-5:]) and 1560 <= sizes[-1] <= 1600
    for _ in range(10):
        sizer.record(sizer.size, sizer.size * 10.0)
    assert sizer.size == 100  # floor
    fixed = engine.BatchSizer(Options(batch_size=1000, target_batch_ms=None))
    fixed.record(1000, 5000)
    assert fixed.size == 1000


def test_pauses_while_too_many_backends_are_active(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 5)
    busy = threading.Thread(target=run_sql, args=(database_url, "SELECT pg_sleep(1.5)"))
    busy.start()
    try:
        time.sleep(0.3)
        log = ListLog()
        options = Options(batch_size=100, sleep_seconds=0, max_active_backends=0, max_lock_wait_ms=None,
                          busy_pause_seconds=0.2)
        result = engine.run(hrms_db, registry.get("set_employee_status"), options, log=log)
    finally:
        busy.join()
    assert "paused, database busy: 1 active backends (limit 0)" in log.text()
    assert (result.status, result.rows_changed) == ("completed", 5)


def test_pauses_while_a_session_waits_for_a_lock_and_gives_up_when_it_lasts(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 5)
    holder = psycopg.connect(database_url)
    holder.execute("LOCK TABLE hrms.core_role IN ACCESS EXCLUSIVE MODE")
    waiter = threading.Thread(target=run_sql, args=(database_url, "SELECT count(*) FROM hrms.core_role"))
    waiter.start()
    try:
        time.sleep(0.5)
        options = Options(batch_size=100, sleep_seconds=0, max_active_backends=None, max_lock_wait_ms=100,
                          busy_pause_seconds=0.1, max_busy_wait_seconds=0.5)
        log = ListLog()
        with pytest.raises(BackfillError, match="the database stayed busy .* waited .* ms for a lock .* launch it again later"):
            engine.run(hrms_db, registry.get("set_employee_status"), options, log=log)
        assert "paused, database busy: a session has waited" in log.text()
    finally:
        holder.commit()
        holder.close()
        waiter.join()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE status IS NULL").fetchone()[0] == 5
    result = engine.run(hrms_db, registry.get("set_employee_status"), options, log=ListLog())
    assert result.rows_changed == 5


def test_a_locked_row_makes_batches_retry_smaller_then_fail_keeping_the_checkpoint(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 20)
        ids = [r[0] for r in conn.execute("SELECT id FROM hrms.employees_employee ORDER BY id")]
    holder = psycopg.connect(database_url)
    holder.execute("SELECT 1 FROM hrms.employees_employee WHERE id = %s FOR UPDATE", [ids[12]])
    options = Options(batch_size=8, sleep_seconds=0, target_batch_ms=None, lock_timeout="100ms", max_retries=2,
                      max_active_backends=None, max_lock_wait_ms=None)
    log = ListLog()
    try:
        with pytest.raises(BackfillError, match="failed 3 times in a row .*lock timeout.*checkpoint keeps the place"):
            engine.run(hrms_db, registry.get("set_employee_status"), options, log=log)
    finally:
        holder.rollback()
        holder.close()
    assert "batch rolled back (canceling statement due to lock timeout); retrying with 4 rows" in log.text()
    with psycopg.connect(database_url) as conn:
        status, last_key, rows_done, _ = checkpoint(conn, "set_employee_status")
        # batches of 8, then 4, then 2 rows were tried past the locked row: 8 + 4 rows committed
        assert (status, last_key, rows_done) == ("failed", ids[11], 12)
        error = conn.execute("SELECT params->>'last_error' FROM hrms.core_backfillcheckpoint").fetchone()[0]
        assert "lock timeout" in error
    result = engine.run(hrms_db, registry.get("set_employee_status"), options, log=ListLog())
    assert (result.resumed_from_key, result.rows_changed, result.rows_left) == (ids[11], 8, 0)


def test_a_second_run_of_the_same_backfill_is_refused(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 3)
        with locks.session_lock(conn, locks.backfill_lock("set_employee_status")):
            with pytest.raises(BackfillError, match="another run of it is in progress"):
                engine.run(hrms_db, registry.get("set_employee_status"), FAST.override(lock_wait="0"), log=ListLog())
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE status IS NULL").fetchone()[0] == 3


def test_registry_lists_the_builtins_and_refuses_unknown_or_duplicate_names():
    assert registry.names() == ["compute_employee_tenure", "compute_payslipline_line_total",
                                "set_department_code_unknown", "set_employee_status"]
    with pytest.raises(UnknownBackfill, match="unknown backfill 'set_employe_status'; registered backfills: compute_employee_tenure"):
        registry.get("set_employe_status")
    own = BackfillRegistry()
    own.backfill("x_one", table="employees_employee", description="d", pending=None)(lambda batch: 0)
    with pytest.raises(ValueError, match="registered twice"):
        own.backfill("x_one", table="employees_employee", description="d", pending=None)(lambda batch: 0)
    with pytest.raises(ValueError, match="lower_snake_case"):
        own.backfill("Bad Name", table="employees_employee", description="d", pending=None)(lambda batch: 0)
    with pytest.raises(BackfillError, match=r"batch_size must be between 1 and 1,000,000 \(got 0\)"):
        Options(batch_size=0).validate()


@pytest.mark.parametrize(("knob", "value", "limit"), [
    ("sleep_seconds", 86_400.0, "between 0 and 60"),
    ("batch_size", 5_000_000, "between 1 and 1,000,000"),
    ("target_batch_ms", 60_000, "between 1 and 10,000"),
    ("statement_timeout", "1h", "between 0.001 s and 300 s"),
    ("lock_timeout", "2min", "between 0.001 s and 60 s"),
    ("max_busy_wait_seconds", 86_400.0, "between 0.1 and 3,600"),
    ("max_runtime_seconds", 86_400.0, "between 1 and 43,200"),
    ("max_retries", 1000, "between 0 and 20"),
])
def test_every_numeric_knob_has_a_bound_named_when_refused(knob, value, limit):
    with pytest.raises(BackfillError, match=f"{knob} must be {limit}"):
        Options(**{knob: value}).validate()
    with pytest.raises(BackfillError, match="lock_timeout 'soon' is not a duration"):
        Options(lock_timeout="soon").validate()
    for backfill in registry:  # the registered defaults are within bounds
        backfill.defaults.validate()


def test_a_batch_another_session_waited_on_makes_the_next_batch_smaller_and_the_pause_longer(hrms_db, database_url):
    """A bystander (an application session) updates a row the first batch holds and waits on it; the
    batch sees it before it commits: the next batch is half the size, the checkpoint and the audit
    row say so, the size grows back after batches nobody waited on, and the bystander's update goes
    through once the batch commits."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 40, prefix="by")
    bystander_done = threading.Event()
    errors: list[BaseException] = []

    def bystander(key: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as app:
                app.execute("UPDATE hrms.employees_employee SET hire_date = date '2016-01-01' WHERE id = %s", [key])
            bystander_done.set()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            errors.append(exc)

    own = BackfillRegistry()

    @own.backfill("with_bystander", table="employees_employee", description="d", pending="status IS NULL")
    def with_bystander(batch) -> int:
        changed = batch.update("status = 'active'")
        if batch.plan.params.setdefault("_blocked_once", False) is False:
            batch.plan.params["_blocked_once"] = True
            threading.Thread(target=bystander, args=[batch.first_key], daemon=True).start()
            deadline = time.monotonic() + 120
            while throttle.blocked_by_me(batch.conn) == 0:
                assert time.monotonic() < deadline, "the bystander never waited on the batch"
                time.sleep(0.05)
        return changed

    log = ListLog()
    result = engine.run(hrms_db, own.get("with_bystander"), Options(
        batch_size=8, sleep_seconds=0, target_batch_ms=None, max_active_backends=None, max_lock_wait_ms=None), log=log)
    assert bystander_done.wait(60) and not errors
    assert (result.status, result.rows_changed) == ("completed", 40)
    assert (result.batches_that_blocked, result.bystanders_waited) == (1, 1)
    assert "1 other session(s) waited on the batch ending at key" in log.text() and "next batch 4 rows, pause 0.05 s" in log.text()
    with psycopg.connect(database_url) as conn:
        sizes = [r[0] for r in conn.execute(
            """SELECT (after->>'rows_in_batch')::int FROM hrms.core_auditlog
               WHERE source = 'backfill:with_bystander' ORDER BY id""")]
        waiting = [r[0] for r in conn.execute(
            """SELECT (after->>'sessions_waiting')::int FROM hrms.core_auditlog
               WHERE source = 'backfill:with_bystander' ORDER BY id""")]
        blocked = conn.execute("SELECT params->'last_blocked_batch' FROM hrms.core_backfillcheckpoint "
                               "WHERE name = 'with_bystander'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM hrms.employees_employee WHERE hire_date = date '2016-01-01'").fetchone()[0] == 1
    assert sizes[:5] == [8, 4, 5, 6, 7] and sum(sizes) == 40
    assert waiting[0] == 1 and set(waiting[1:]) == {0}
    assert (blocked["rows"], blocked["sessions_waiting"]) == (8, 1)
    assert result.metadata()["batches_that_blocked"] == 1


def test_paused_s_counts_only_real_pauses(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 20, prefix="np")
    result = engine.run(hrms_db, registry.get("set_employee_status"), Options(
        batch_size=5, sleep_seconds=0, target_batch_ms=None, max_active_backends=10_000, max_lock_wait_ms=600_000),
        log=ListLog())
    assert result.batches == 4 and result.paused_s == 0.0 and result.replica_paused_s == 0.0


def test_a_run_past_max_runtime_seconds_stops_at_a_batch_boundary_and_the_next_launch_resumes(hrms_db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_employees(conn, 20, prefix="rt")
    # 20 batches with 0.3 s between them cannot end within the 1 s allowed
    options = Options(batch_size=1, sleep_seconds=0.3, target_batch_ms=None, max_active_backends=None,
                      max_lock_wait_ms=None, max_runtime_seconds=1)
    log = ListLog()
    first = engine.run(hrms_db, registry.get("set_employee_status"), options, log=log)
    assert first.status == "stopped" and 0 < first.rows_changed < 20
    assert "(max_runtime_seconds 1); the next launch resumes after key" in log.text()
    rest = engine.run(hrms_db, registry.get("set_employee_status"), options.override(sleep_seconds=0, max_runtime_seconds=600), log=log)
    assert (rest.status, first.rows_changed + rest.rows_changed, rest.resumed_from_key) == ("completed", 20, first.last_key)
