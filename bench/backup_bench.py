"""Backup and restore throughput, and what encryption costs beside plain gzip, in the same run.

    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/backup_bench.py [--rows 1000000]

(or the server of HRMS_BENCH_ADMIN_URL). It creates a scratch database next to the HR one (dropped at the
end), applies the migrations, fills hrms.history_timelineevent with --rows events (jsonb details,
text summaries) for 10,000 employees, then times, each against its baseline in the same process:

  export   raw `COPY ... TO STDOUT` (discarded)
           plain gzip backup: COPY -> gzip -> sha256 -> file (what backups were before encryption)
           take_backup: COPY -> gzip -> age (X25519, ChaCha20-Poly1305) -> sha256 -> file, signed manifest
  read     gunzip of the plain file  vs  age-decrypt + gunzip of the backup file (what a restore streams)
  restore  raw `COPY ... FROM STDIN` into a bare table  vs  restore_backup after 10% of rows changed
           (signature, sha256 and key checks, pre-restore backup, decrypt, staging, replace, exactness, audit)

and prints rows/s, the ratios (encrypted / plain gzip is what encryption costs) and the peak RSS.
Keys are generated for the run in a temporary folder (HRMS_KEYS_DIR), never the developer's.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _scratch  # noqa: E402
from hrms_pipelines import backups, settings  # noqa: E402
from hrms_pipelines.backups import crypto  # noqa: E402

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


def plain_gzip_export(conn: psycopg.Connection, path: Path) -> tuple[int, float, int]:
    """The backup as it was before encryption: COPY -> gzip (same level, same streaming) -> sha256 -> file."""
    started = time.perf_counter()
    digest, size = hashlib.sha256(), 0
    with conn.transaction(), open(path, "wb") as out:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = conn.cursor()
        with cur.copy(f"COPY {TABLE} TO STDOUT (FORMAT csv, HEADER)") as copy:
            source = crypto.GzipSource(copy, crypto.COMPRESS_LEVEL)
            while data := source.read(1 << 16):
                digest.update(data)
                size += len(data)
                out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return cur.rowcount, time.perf_counter() - started, size


def read_plain(path: Path) -> float:
    started = time.perf_counter()
    sink = _Gunzip()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 13):  # the 8 KiB pieces age hands over
            sink.write(chunk)
    return time.perf_counter() - started


class _Gunzip:
    def __init__(self) -> None:
        self.unzip = zlib.decompressobj(31)

    def write(self, data: bytes) -> int:
        self.unzip.decompress(data)
        return len(data)

    def flush(self) -> None:
        pass


def read_encrypted(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as src:
        crypto.decrypt_stream(src, _Gunzip(), crypto.identities())
    return time.perf_counter() - started


def raw_import(conn: psycopg.Connection, plain_gz: Path) -> tuple[int, float]:
    """COPY the plain CSV (decompressed beforehand, outside the timing) into a bare table."""
    plain = plain_gz.with_suffix(".csv")
    with gzip.open(plain_gz, "rb") as src, open(plain, "wb") as dst:
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


def line(label: str, rows: int, seconds: float, baseline: float | None = None, what: str = "baseline") -> float:
    rate = rows / seconds
    ratio = f"   {rate / baseline:.2f} x {what}" if baseline else ""
    print(f"  {label:<52} {rows:>10,} rows {seconds:>8.2f} s {rate:>12,.0f} rows/s{ratio}", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each export and read; the best counts")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="hrms-backup-bench-"))
    os.environ[settings.KEYS_DIR_ENV] = str(scratch / "keys")
    for name in crypto.KEY_ENVS:
        os.environ.pop(name, None)
    root = scratch / "backups"
    name, bench_url = _scratch.create("bench_backup")
    _scratch.migrate(bench_url)
    try:
        with psycopg.connect(bench_url, autocommit=True) as conn:
            print(f"filling {TABLE} with {args.rows:,} rows …", flush=True)
            fill(conn, args.rows)

            print("\nexport")
            rows, seconds = raw_export(conn)
            raw_rate = line("raw COPY TO STDOUT (discarded)", rows, seconds)
            # plain and encrypted alternate, best of --repeat each: a busy machine slows one run, not the figure
            plain_file = scratch / "plain.csv.gz"
            plain_best = encrypted_best = float("inf")
            for attempt in range(args.repeat):
                plain_file.unlink(missing_ok=True)
                rows, seconds, plain_size = plain_gzip_export(conn, plain_file)
                plain_best = min(plain_best, seconds)
                started = time.perf_counter()
                manifest = backups.take_backup(conn, [TABLE], label="bench", run_id=f"bench{attempt}", backup_root=root)
                encrypted_best = min(encrypted_best, time.perf_counter() - started)
            plain_rate = line(f"plain gzip backup ({plain_size / 2**20:,.1f} MiB)", rows, plain_best, raw_rate, "raw COPY")
            size = manifest.tables[0].bytes
            encrypted_rate = line(f"take_backup, encrypted + signed ({size / 2**20:,.1f} MiB)", manifest.total_rows,
                                  encrypted_best, raw_rate, "raw COPY")
            print(f"    encryption: {encrypted_rate / plain_rate:.2f} x the plain gzip backup's rows/s, "
                  f"{size / plain_size:.4f} x its size")

            print("\nread back (what a restore streams)")
            encrypted_file = manifest.directory / manifest.tables[0].file
            plain_seconds = min(read_plain(plain_file) for _ in range(args.repeat))
            plain_read = line("gunzip of the plain file", rows, plain_seconds)
            encrypted_seconds = min(read_encrypted(encrypted_file) for _ in range(args.repeat))
            line("age-decrypt + gunzip of the backup file", rows, encrypted_seconds, plain_read, "plain gunzip")

            print("\nrestore (10% of the rows changed since the backup)")
            rows, seconds = raw_import(conn, plain_file)
            baseline = line("raw COPY FROM STDIN into a bare table", rows, seconds)
            conn.execute(f"UPDATE {TABLE} SET summary = summary || ' (edited)' WHERE id % 10 = 0")
            started = time.perf_counter()
            result = backups.restore_backup(conn, manifest.backup_id, backup_root=root, run_id="bench", lock_timeout="60s")
            seconds = time.perf_counter() - started
            line("restore_backup (incl. pre-restore backup)", manifest.total_rows, seconds, baseline, "raw COPY")
            counts = result.counts()[TABLE]
            print(f"    replaced {counts.updated:,} rows, {counts.unchanged:,} unchanged")
            started = time.perf_counter()
            backups.restore_backup(conn, manifest.backup_id, backup_root=root, run_id="bench", pre_restore_backup=False)
            line("restore_backup, nothing to change, no pre-backup", manifest.total_rows, time.perf_counter() - started,
                 baseline, "raw COPY")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process: {peak:,.0f} MiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _scratch.drop(name)


if __name__ == "__main__":
    main()
