"""The registered large-table backfill against one single UPDATE of the same change, and what it does
to other queries meanwhile.

    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/backfill_bench.py [--rows 5000000]

(or with HRMS_DATABASE_URL set; the user needs CREATEDB and CHECKPOINT rights). It creates a scratch
database next to the HR one, applies the migrations, fills hrms.payroll_payslipline with --rows lines
(10 per payslip, 10,000 employees), VACUUM ANALYZEs it, and clones it twice (CREATE DATABASE ...
TEMPLATE), so both runs start from the same fresh copy. Then, after a CHECKPOINT each:

  baseline  one `UPDATE payroll_payslipline SET line_total = round(amount * quantity, 2)
            WHERE line_total IS NULL` on copy A
  backfill  `compute_payslipline_line_total` at its registered defaults on copy B (keyset batches,
            adaptive size toward 150 ms, sleep, checkpoint, audit row and the previous value of every
            changed row in core_backfillundo per batch)
  undo      that run undone (undo_backfill's engine, the backfill's sleep and target) on copy B:
            every line_total back to NULL, checked
  (--without-undo-records: also the backfill with no undo records, on a third copy C, to show what
  keeping them costs in the same run)

and a second connection, in its own process, running short queries (a line by id, a payslip's
lines): idle on copy B, beside the single UPDATE on copy A, beside the backfill on copy B. Prints both
totals and their ratio, the batch p50/p99, and the short queries' p99, both the round trip and the
time inside the server (from the statement's arrival to its result), so that waiting for a CPU is
told apart from database work. Targets: ratio <= 2, batch p99 < 250 ms, query p99 ratio <= 2.
Also printed: the size of the undo records. The scratch databases are dropped at the end.

With --bystanders, instead: the HR application's traffic beside backfills of employees_employee
(--rows employees needing a status, a fifth more that do not), open loop at --ops-per-second (200):
30 % updates of a row inside the backfilled range, 20 % outside it, 10 % inserts, 40 % point reads,
from 8 connections in their own process (lock_timeout 2s, as an application sets it), each
operation's latency counted from the time it was scheduled (so a stall delays every later operation
it holds up, as users would see it) and every error counted. Phases: quiet; `set_employee_status` at
its registered defaults; its undo; on a fresh copy, one naive `UPDATE` of the same change. Prints the
bystanders' p99 in each phase / quiet (goal <= 1.5), errors (goal 0), the batches' p99 against the
target, how often a batch made a bystander wait and how long the backfill paused.

    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/backfill_bench.py --bystanders --rows 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import random
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _scratch  # noqa: E402
from hrms_pipelines.backfills import engine, undo  # noqa: E402
from hrms_pipelines.backfills.registry import Backfill, registry  # noqa: E402
from hrms_pipelines.resources import PinnedDatabase  # noqa: E402

BACKFILL = "compute_payslipline_line_total"
SINGLE_UPDATE = ("UPDATE hrms.payroll_payslipline SET line_total = round(amount * quantity, 2) "
                 "WHERE line_total IS NULL")
LINES_PER_SLIP = 10
EMPLOYEES = 10_000


def fill(url: str, rows: int) -> None:
    slips = -(-rows // LINES_PER_SLIP)
    periods = -(-slips // EMPLOYEES)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("""INSERT INTO hrms.employees_employee (email, status, hire_date)
                        SELECT 'staff' || g || '@ghs.gov.gh', 'active', date '2005-01-01' + g %% 5000
                        FROM generate_series(1, %s) g""", [EMPLOYEES])
        conn.execute("""INSERT INTO hrms.payroll_payperiod (year, month, starts_on, ends_on)
                        SELECT 2010 + (g - 1) / 12, 1 + (g - 1) %% 12, d, (d + interval '1 month - 1 day')::date
                        FROM generate_series(1, %s) g, LATERAL (SELECT make_date(2010 + (g - 1) / 12, 1 + (g - 1) %% 12, 1) d) m""",
                     [periods])
        conn.execute("""INSERT INTO hrms.payroll_paycomponent (code, name, kind)
                        SELECT 'C' || g, 'Component ' || g, CASE WHEN g <= 6 THEN 'earning' ELSE 'deduction' END
                        FROM generate_series(1, %s) g""", [LINES_PER_SLIP])
        conn.execute("""INSERT INTO hrms.payroll_payslip (employee_id, pay_period_id, gross_pay, total_deductions, net_pay)
                        SELECT e.id, p.id, 0, 0, 0 FROM hrms.payroll_payperiod p CROSS JOIN hrms.employees_employee e
                        ORDER BY p.id, e.id LIMIT %s""", [slips])
        conn.execute("""INSERT INTO hrms.payroll_payslipline (payslip_id, pay_component_id, amount, quantity, description)
                        SELECT s.id, c.id, round((random() * 9000 + 100)::numeric, 2), 1 + (s.id %% 3) * 0.5,
                               'line ' || c.code
                        FROM hrms.payroll_payslip s CROSS JOIN hrms.payroll_paycomponent c
                        ORDER BY s.id, c.id LIMIT %s""", [rows])
        conn.execute("VACUUM (ANALYZE) hrms.payroll_payslipline")
        conn.execute("VACUUM (ANALYZE) hrms.payroll_payslip")


# the query's own time inside the server (from the statement's arrival to its last row), beside the
# round trip the application sees: it tells database work from waiting for a CPU
SERVER_MS = "extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000"


def _sample_short_queries(url: str, max_id: int, max_slip: int, pause: float, stop, results) -> None:
    rnd = random.Random(7)
    latencies: list[tuple[float, float]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            if rnd.random() < 0.5:
                query, arg = f"SELECT amount, line_total, {SERVER_MS} FROM hrms.payroll_payslipline WHERE id = %s", rnd.randint(1, max_id)
            else:
                query, arg = (f"SELECT count(*), sum(amount), {SERVER_MS} FROM hrms.payroll_payslipline WHERE payslip_id = %s",
                              rnd.randint(1, max_slip))
            started = time.perf_counter()
            rows = conn.execute(query, [arg]).fetchall()
            latencies.append(((time.perf_counter() - started) * 1000, float(rows[0][-1])))
            time.sleep(pause)
    results.put(latencies)


class ShortQueries:
    """Point queries on the table from their own connection in their own process (as the
    application's would come), every `pause` seconds, until stopped. A thread of this process would
    also measure waits for the GIL while the backfill's Python code runs (5 ms switch interval)."""

    def __init__(self, url: str, max_id: int, max_slip: int, pause: float = 0.01) -> None:
        context = multiprocessing.get_context("fork")
        self._stop, self._results = context.Event(), context.Queue()
        self._process = context.Process(target=_sample_short_queries, daemon=True,
                                        args=(url, max_id, max_slip, pause, self._stop, self._results))

    def start(self) -> None:
        self._process.start()

    def stop(self) -> list[tuple[float, float]]:
        """(round trip ms, server ms) per query."""
        self._stop.set()
        latencies = self._results.get()
        self._process.join()
        return latencies


def p99(samples: list[tuple[float, float]], part: int = 0) -> float:
    return engine.percentile([sample[part] for sample in samples], 99)


class PrintLog:
    def info(self, msg: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {msg}", flush=True)

    warning = info


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def without_undo_records(backfill: Backfill) -> Backfill:
    """The same backfill, keeping no previous values (what every backfill did before undo existed)."""
    def prepare(conn: psycopg.Connection):
        return dataclasses.replace(backfill.prepare(conn), undoable=False)
    return dataclasses.replace(backfill, prepare=prepare)


# --- bystanders: the HR application's traffic beside a backfill -----------------------------------

BYSTANDER_BACKFILL = "set_employee_status"
NAIVE_STATUS_UPDATE = ("UPDATE hrms.employees_employee SET status = CASE WHEN termination_date <= current_date "
                       "THEN 'terminated' ELSE 'active' END, updated_at = now() WHERE status IS NULL AND NOT is_placeholder")
BYSTANDER_CONNECTIONS = 8


def fill_employees(url: str, rows: int) -> tuple[int, int]:
    """`rows` employees without a status (the backfill's range), then a fifth as many with one; returns
    (last id of the range, last id)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("""INSERT INTO hrms.employees_employee (email, hire_date, job_title, department_code)
                        SELECT 'staff' || g || '@ghs.gov.gh', date '2005-01-01' + g %% 5000, 'Officer', 'D' || g %% 40
                        FROM generate_series(1, %s) g""", [rows])
        conn.execute("""INSERT INTO hrms.employees_employee (email, status, hire_date, job_title)
                        SELECT 'kept' || g || '@ghs.gov.gh', 'active', date '2005-01-01' + g %% 5000, 'Officer'
                        FROM generate_series(1, %s) g""", [max(rows // 5, 1)])
        conn.execute("VACUUM (ANALYZE) hrms.employees_employee")
        return conn.execute("SELECT max(id) FILTER (WHERE status IS NULL), max(id) FROM hrms.employees_employee").fetchone()


def _bystander(url: str, worker: int, rate: float, inside: int, last: int, start_at: float, stop, results) -> None:
    """One of the application's connections: operations worker, worker + N, ... of a schedule at
    `rate` per second in all, each timed from when it was due."""
    import threading  # noqa: F401  (the process runs several of these as threads)
    rnd = random.Random(worker)
    samples: list[tuple[str, float, str | None]] = []
    period = BYSTANDER_CONNECTIONS / rate
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '2s'")
        conn.execute("SET statement_timeout = '10s'")
        k = 0
        while not stop.is_set():
            due = start_at + (worker / BYSTANDER_CONNECTIONS + k) * period
            k += 1
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            roll = rnd.random()
            error = None
            try:
                if roll < 0.3:
                    kind = "update inside"
                    conn.execute("UPDATE hrms.employees_employee SET job_title = 'Officer ' || %s, updated_at = now() "
                                 "WHERE id = %s", [k % 7, rnd.randint(1, inside)])
                elif roll < 0.5:
                    kind = "update outside"
                    conn.execute("UPDATE hrms.employees_employee SET job_title = 'Officer ' || %s, updated_at = now() "
                                 "WHERE id = %s", [k % 7, rnd.randint(inside + 1, last)])
                elif roll < 0.6:
                    kind = "insert"
                    conn.execute("INSERT INTO hrms.employees_employee (email, status, hire_date) VALUES (%s, 'active', "
                                 "current_date)", [f"new{worker}-{k}-{uuid.uuid4().hex[:6]}@ghs.gov.gh"])
                else:
                    kind = "read"
                    conn.execute("SELECT email, status, job_title FROM hrms.employees_employee WHERE id = %s",
                                 [rnd.randint(1, last)]).fetchall()
            except psycopg.Error as exc:
                error = type(exc).__name__
            samples.append((kind, (time.time() - due) * 1000, error))
    results.put(samples)


def _bystander_process(url: str, rate: float, inside: int, last: int, start_at: float, stop, results) -> None:
    import threading
    threads = [threading.Thread(target=_bystander, args=(url, w, rate, inside, last, start_at, stop, results))
               for w in range(BYSTANDER_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Bystanders:
    """The application's traffic, open loop, in its own process (see the module docstring)."""

    def __init__(self, url: str, rate: float, inside: int, last: int) -> None:
        context = multiprocessing.get_context("fork")
        self._stop, self._results = context.Event(), context.Queue()
        self._process = context.Process(target=_bystander_process, daemon=True, args=(
            url, rate, inside, last, time.time() + 0.5, self._stop, self._results))

    def __enter__(self) -> Bystanders:
        self._process.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.samples: list[tuple[str, float, str | None]] = []
        for _ in range(BYSTANDER_CONNECTIONS):
            self.samples += self._results.get()
        self._process.join()


def bystander_main(args: argparse.Namespace) -> int:
    tag = uuid.uuid4().hex[:8]
    names: list[str] = []
    backfill = registry.get(BYSTANDER_BACKFILL)
    options = backfill.defaults
    print(f"bystander benchmark: {args.rows:,} employees to backfill, {args.ops_per_second:g} application operations/s; "
          f"{BYSTANDER_BACKFILL} defaults: batch {options.batch_size:,}, target {options.target_batch_ms} ms, "
          f"sleep {options.sleep_seconds}s", flush=True)
    try:
        source, source_url = _scratch.create(f"bench_bystanders_{tag}")
        names.append(source)
        _scratch.migrate(source_url)
        inside, last = fill_employees(source_url, args.rows)
        copy_a, url_a = _scratch.create(f"{source}_a", template=source)
        copy_b, url_b = _scratch.create(f"{source}_b", template=source)
        names += [copy_a, copy_b]
        phases: dict[str, list[tuple[str, float, str | None]]] = {}
        db = PinnedDatabase(location=url_b)

        checkpoint(url_b)
        with Bystanders(url_b, args.ops_per_second, inside, last) as quiet:
            time.sleep(args.idle_seconds)
        phases["quiet"] = quiet.samples

        checkpoint(url_b)
        with Bystanders(url_b, args.ops_per_second, inside, last) as during:
            result = engine.run(db, backfill, options, log=PrintLog(), run_id=f"bench-{tag}")
        phases["backfill"] = during.samples

        checkpoint(url_b)
        with Bystanders(url_b, args.ops_per_second, inside, last) as during_undo:
            report = undo.undo(db, backfill=BYSTANDER_BACKFILL, options=undo.DEFAULTS, log=PrintLog(),
                               undo_run_id=f"bench-undo-{tag}")
        phases["undo"] = during_undo.samples

        checkpoint(url_a)
        with Bystanders(url_a, args.ops_per_second, inside, last) as naive:
            with psycopg.connect(url_a) as conn:
                started = time.perf_counter()
                updated = conn.execute(NAIVE_STATUS_UPDATE).rowcount
                conn.commit()
                naive_s = time.perf_counter() - started
            time.sleep(1.0)  # the operations it held up finish
        phases["naive UPDATE"] = naive.samples

        quiet_p99 = engine.percentile([s[1] for s in phases["quiet"]], 99)
        print()
        print(f"{'phase':16}{'ops':>8}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}{'p99/quiet':>11}  worst kind (p99 ms)")
        for phase, samples in phases.items():
            latencies = [s[1] for s in samples]
            errors = sum(1 for s in samples if s[2])
            kinds = {k: engine.percentile([s[1] for s in samples if s[0] == k], 99) for k in {s[0] for s in samples}}
            worst = max(kinds, key=kinds.get) if kinds else "-"
            p99_ms = engine.percentile(latencies, 99)
            ratio = p99_ms / quiet_p99 if quiet_p99 else float("inf")
            verdict = "" if phase in ("quiet", "naive UPDATE") else ("  ok" if ratio <= 1.5 and not errors else "  MISSED")
            print(f"{phase:16}{len(samples):8,}{errors:8,}{engine.percentile(latencies, 50):10.1f}{p99_ms:10.1f}"
                  f"{ratio:11.2f}  {worst} ({kinds.get(worst, 0):.0f}){verdict}")
        target = options.target_batch_ms or 0
        p99_batch = result.batch_ms_percentile(99)
        print(f"\nbackfill: {result.rows_changed:,} rows in {result.duration_s:.1f}s, {result.batches:,} batches, batch p99 "
              f"{p99_batch:.0f} ms (target {target} ms: {'ok' if p99_batch <= target else 'MISSED'}), "
              f"{result.batches_that_blocked} batches made a bystander wait, paused {result.paused_s:.1f}s")
        print(f"undo: {report.total('restored'):,} rows restored, {report.total('changed'):,} changed since and left")
        print(f"naive UPDATE: {updated:,} rows in {naive_s:.1f}s")
        return 0
    finally:
        for name in names:
            _scratch.drop(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--bystanders", action="store_true", help="the application-traffic benchmark (see above)")
    parser.add_argument("--ops-per-second", type=float, default=200.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long to sample idle short queries")
    parser.add_argument("--without-undo-records", action="store_true",
                        help="also time the backfill keeping no undo records, on a third copy")
    args = parser.parse_args()
    if args.bystanders:
        return bystander_main(args)

    tag = uuid.uuid4().hex[:8]
    source, copy_a, copy_b, copy_c = f"bench_backfill_{tag}", "", "", ""
    backfill = registry.get(BACKFILL)
    options = backfill.defaults
    print(f"backfill benchmark: {args.rows:,} payslip lines; {BACKFILL} defaults: batch {options.batch_size:,}, "
          f"target {options.target_batch_ms} ms, sleep {options.sleep_seconds}s, max batch {options.max_batch_size:,}")
    try:
        started = time.perf_counter()
        source, source_url = _scratch.create(source)
        _scratch.migrate(source_url)
        fill(source_url, args.rows)
        with psycopg.connect(source_url) as conn:
            max_id, max_slip, size = conn.execute(
                """SELECT (SELECT max(id) FROM hrms.payroll_payslipline), (SELECT max(id) FROM hrms.payroll_payslip),
                          pg_size_pretty(pg_total_relation_size('hrms.payroll_payslipline'))""").fetchone()
        copy_a, url_a = _scratch.create(f"{source}_a", template=source)
        copy_b, url_b = _scratch.create(f"{source}_b", template=source)
        if args.without_undo_records:
            copy_c, url_c = _scratch.create(f"{source}_c", template=source)
        _scratch.drop(source)
        print(f"filled and cloned in {time.perf_counter() - started:.0f}s (table with indexes: {size})", flush=True)

        checkpoint(url_a)
        beside_single = ShortQueries(url_a, max_id, max_slip)
        beside_single.start()
        try:
            with psycopg.connect(url_a) as conn:
                started = time.perf_counter()
                updated = conn.execute(SINGLE_UPDATE).rowcount
                conn.commit()
                single_s = time.perf_counter() - started
        finally:
            single_ms = beside_single.stop()
        print(f"single UPDATE: {updated:,} rows in {single_s:.1f}s ({updated / single_s:,.0f} rows/s)", flush=True)
        _scratch.drop(copy_a)

        checkpoint(url_b)
        idle = ShortQueries(url_b, max_id, max_slip)
        idle.start()
        time.sleep(args.idle_seconds)
        idle_ms = idle.stop()

        checkpoint(url_b)
        during = ShortQueries(url_b, max_id, max_slip)
        during.start()
        try:
            result = engine.run(PinnedDatabase(location=url_b), backfill, options, log=PrintLog(), run_id=f"bench-{tag}")
        finally:
            during_ms = during.stop()
        with psycopg.connect(url_b) as conn:
            wrong = conn.execute("SELECT count(*) FROM hrms.payroll_payslipline "
                                 "WHERE line_total IS DISTINCT FROM round(amount * quantity, 2)").fetchone()[0]
            records, records_size = conn.execute(
                """SELECT (SELECT count(*) FROM hrms.core_backfillundo),
                          pg_size_pretty(pg_total_relation_size('hrms.core_backfillundo'))""").fetchone()
        assert result.rows_changed == updated and wrong == 0, (result.rows_changed, updated, wrong)

        checkpoint(url_b)
        started = time.perf_counter()
        undo_options = undo.DEFAULTS.override(sleep_seconds=options.sleep_seconds, target_batch_ms=options.target_batch_ms)
        report = undo.undo(PinnedDatabase(location=url_b), backfill=BACKFILL, options=undo_options, log=PrintLog(),
                           undo_run_id=f"bench-undo-{tag}")
        undo_s = time.perf_counter() - started
        with psycopg.connect(url_b) as conn:
            left = conn.execute("SELECT count(*) FROM hrms.payroll_payslipline WHERE line_total IS NOT NULL").fetchone()[0]
        assert report.total("restored") == updated and left == 0, (report.total("restored"), left)
        _scratch.drop(copy_b)

        plain_s = None
        if args.without_undo_records:
            checkpoint(url_c)
            plain = engine.run(PinnedDatabase(location=url_c), without_undo_records(backfill), options, log=PrintLog(),
                               run_id=f"bench-plain-{tag}")
            plain_s = plain.duration_s
            _scratch.drop(copy_c)

        ratio = result.duration_s / single_s
        p99_batch = result.batch_ms_percentile(99)
        idle_p99, during_p99 = p99(idle_ms), p99(during_ms)
        query_ratio = during_p99 / idle_p99 if idle_p99 else float("inf")
        sleep_total = options.sleep_seconds * max(result.batches - 1, 0)
        print()
        print(f"{'':28}{'single UPDATE':>16}{'backfill':>16}{'ratio':>10}   target")
        print(f"{'total time (s)':28}{single_s:16.1f}{result.duration_s:16.1f}{ratio:10.2f}   <= 2.00 "
              f"{'ok' if ratio <= 2 else 'MISSED'}")
        print(f"{'rows/s':28}{updated / single_s:16,.0f}{result.rows_per_second:16,.0f}")
        print(f"{'undo of the backfill (s)':28}{'':16}{undo_s:16.1f}{undo_s / single_s:10.2f}")
        if plain_s is not None:
            print(f"{'backfill, no undo records':28}{'':16}{plain_s:16.1f}{plain_s / single_s:10.2f}   "
                  f"(keeping them: x{result.duration_s / plain_s:.2f})")
        print(f"undo records: {records:,} rows, {records_size} with their index")
        print(f"batches: {result.batches:,}, final batch size {result.final_batch_size:,}, "
              f"batch p50 {result.batch_ms_percentile(50):.0f} ms, p99 {p99_batch:.0f} ms (target < 250 "
              f"{'ok' if p99_batch < 250 else 'MISSED'}), max {max(result.batch_ms):.0f} ms; "
              f"of the total {sleep_total:.1f}s were sleep between batches, {result.paused_s:.1f}s busy pauses, "
              f"{result.retries} retries")
        print(f"\nshort queries, p99 in ms{'':4}{'idle':>10}{'beside UPDATE':>16}{'beside backfill':>18}")
        print(f"{'round trip (what apps see)':28}{idle_p99:10.2f}{p99(single_ms):16.2f}{during_p99:18.2f}")
        print(f"{'inside the server':28}{p99(idle_ms, 1):10.2f}{p99(single_ms, 1):16.2f}{p99(during_ms, 1):18.2f}")
        print(f"{'queries':28}{len(idle_ms):10,}{len(single_ms):16,}{len(during_ms):18,}")
        print(f"round trip beside the backfill / idle: {query_ratio:.2f} (target <= 2 "
              f"{'ok' if query_ratio <= 2 else 'MISSED'})")
        return 0
    finally:
        for name in (source, copy_a, copy_b, copy_c):
            if name:
                _scratch.drop(name)


if __name__ == "__main__":
    sys.exit(main())
