"""Backup and restore throughput against raw COPY, in the same process and database.

    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/backup_bench.py [--rows 1000000]

(or the server of HRMS_BENCH_ADMIN_URL). It creates a scratch database next to the HR one (dropped at the
end), applies the migrations, fills hrms.history_timelineevent with --rows events (jsonb details,
text summaries) for 10,000 employees, then times:

  export   raw `COPY ... TO STDOUT` (bytes discarded)   vs  take_backup (COPY + gzip + sha256 + files)
  restore  raw `COPY ... FROM STDIN` into a bare table  vs  restore_backup after 10% of rows changed
           (verify, pre-restore backup, staging, replace, exactness check, audit)

and prints rows/s of each and their ratio, plus the zlib level trade-off of the export.
"""

from __future__ import annotations

import argparse
import gzip
import resource
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _scratch  # noqa: E402
from hrms_pipelines import backups  # noqa: E402

TABLE = "hrms.history_timelineevent"


def fill(conn: psycopg.Connection, rows: int) -> None:
    with conn.transaction():
        conn.execute("""
            INSERT INTO hrms.employees_employee (email, first_name, last_name, status, hire_date)
            SELECT 'person' || g || '@nhia.gov.gh', 'Person', 'Number ' || g, 'active', date '2010-01-01' + g % 4000
            FROM generate_series(1, 10000) g""")
        conn.execute("""
            INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary, details, created_at)
            SELECT 1 + g %% 10000, (ARRAY['hire','promotion','salary_change','level_change','note'])[1 + g %% 5],
                   date '2000-01-01' + (g / 10000),
                   'Promoted to L' || (1 + g %% 9) || ' Senior Engineer (Engineering), pay band P' || (1 + g %% 9)
                       || ', salary GHS ' || to_char(5000 + g %% 7000, 'FM999,990.00') || ' -> GHS '
                       || to_char(5500 + g %% 7000, 'FM999,990.00'),
                   jsonb_build_object('pay_band', 'P' || (1 + g %% 9), 'salary', (5500 + g %% 7000)::numeric(12,2),
                                      'previous_salary', (5000 + g %% 7000)::numeric(12,2), 'note', CASE WHEN g %% 7 = 0 THEN NULL ELSE 'ok "quoted", comma' END),
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
            FROM generate_series(1, %s) g""", [rows])
    conn.execute("VACUUM ANALYZE hrms.history_timelineevent")


def raw_export(conn: psycopg.Connection) -> tuple[int, float]:
    started = time.perf_counter()
    with conn.transaction():
        cur = conn.cursor()
        with cur.copy(f"COPY {TABLE} TO STDOUT (FORMAT csv, HEADER)") as copy:
            for _ in copy:
                pass
        return cur.rowcount, time.perf_counter() - started


def raw_import(conn: psycopg.Connection, csv_gz: Path) -> tuple[int, float]:
    """COPY the plain CSV (decompressed beforehand, outside the timing) into a bare table."""
    plain = csv_gz.with_suffix("")
    with gzip.open(csv_gz, "rb") as src, open(plain, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    with conn.transaction():
        conn.execute(f"CREATE TEMPORARY TABLE bare AS SELECT * FROM {TABLE} WITH NO DATA")
        started = time.perf_counter()
        cur = conn.cursor()
        with cur.copy("COPY bare FROM STDIN (FORMAT csv, HEADER)") as copy, open(plain, "rb") as src:
            while chunk := src.read(1 << 20):
                copy.write(chunk)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bare")
    plain.unlink()
    return cur.rowcount, elapsed


def line(label: str, rows: int, seconds: float, baseline: float | None = None) -> float:
    rate = rows / seconds
    ratio = f"   ratio {rate / baseline:.2f}" if baseline else ""
    print(f"  {label:<44} {rows:>10,} rows {seconds:>8.2f} s {rate:>12,.0f} rows/s{ratio}", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--levels", default="1,3,6", help="zlib levels to compare for the export")
    args = parser.parse_args()

    name, bench_url = _scratch.create("bench_backup")
    _scratch.migrate(bench_url)
    root = Path(tempfile.mkdtemp(prefix="hrms-backup-bench-"))
    try:
        with psycopg.connect(bench_url, autocommit=True) as conn:
            print(f"filling {TABLE} with {args.rows:,} rows …", flush=True)
            fill(conn, args.rows)

            print("\nexport")
            rows, seconds = raw_export(conn)
            baseline = line("raw COPY TO STDOUT (discarded)", rows, seconds)
            results = {}
            for level in (int(x) for x in args.levels.split(",")):
                backups.COMPRESS_LEVEL = level
                started = time.perf_counter()
                manifest = backups.take_backup(conn, [TABLE], label="bench", run_id=f"level{level}", backup_root=root)
                seconds = time.perf_counter() - started
                size = manifest.tables[0].bytes
                line(f"take_backup (gzip level {level}, {size / 2**20:,.0f} MiB)", manifest.total_rows, seconds, baseline)
                results[level] = manifest
            manifest = results.get(3) or next(iter(results.values()))

            print("\nrestore (10% of the rows changed since the backup)")
            rows, seconds = raw_import(conn, manifest.directory / manifest.tables[0].file)
            baseline = line("raw COPY FROM STDIN into a bare table", rows, seconds)
            conn.execute(f"UPDATE {TABLE} SET summary = summary || ' (edited)' WHERE id % 10 = 0")
            started = time.perf_counter()
            result = backups.restore_backup(conn, manifest.backup_id, backup_root=root, run_id="bench", lock_timeout="60s")
            seconds = time.perf_counter() - started
            line("restore_backup (incl. pre-restore backup)", manifest.total_rows, seconds, baseline)
            counts = result.counts()[TABLE]
            print(f"    replaced {counts.updated:,} rows, {counts.unchanged:,} unchanged")
            started = time.perf_counter()
            backups.restore_backup(conn, manifest.backup_id, backup_root=root, run_id="bench", pre_restore_backup=False)
            line("restore_backup, nothing to change, no pre-backup", manifest.total_rows, time.perf_counter() - started, baseline)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process: {peak:,.0f} MiB")
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        _scratch.drop(name)


if __name__ == "__main__":
    main()
