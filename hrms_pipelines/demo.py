"""What `make demo` runs (inside `python -m hrms_pipelines.local run`): every step is a real job
run through `dagster job execute`, recorded in Dagster's storage, so `make dev` shows them after."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from hrms_pipelines import roles, settings
from hrms_pipelines import resources
from hrms_pipelines.resources import redact
from hrms_pipelines.seeding.summary import print_seed_summary


def dagster_job(job: str, *config_files: str) -> None:
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "hrms_pipelines", "-j", job]
    for config in config_files:
        command += ["-c", config]
    print(f"\n$ dagster job execute -m hrms_pipelines -j {job}" + "".join(f" -c {c}" for c in config_files), flush=True)
    result = subprocess.run(command, cwd=settings.PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-6000:])
        sys.stderr.write(result.stderr[-6000:])
        raise SystemExit(f"job {job} failed (exit {result.returncode})")
    print(f"  {job}: succeeded")


def print_ledger(url: str) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT app, version, name, left(checksum, 12), applied_at, duration_ms "
            "FROM hrms_meta.migration_ledger ORDER BY applied_at, app, version"
        ).fetchall()
    print("\nMigration ledger:")
    print(f"  {'app':<11} {'version':<8} {'name':<32} {'sha256':<13} {'applied at':<20} {'ms':>5}")
    for app, version, name, checksum, applied_at, ms in rows:
        print(f"  {app:<11} {version:<8} {name:<32} {checksum:<13} {applied_at:%Y-%m-%d %H:%M:%S} {ms:>5}")


def print_import_summary(url: str) -> None:
    from hrms_pipelines.imports.summaries import database_counts

    with psycopg.connect(url) as conn:
        counts = database_counts(conn)
        records = conn.execute(
            "SELECT stage, file_name, outcome, rows_read, inserted, updated, unchanged FROM hrms.imports_importrecord "
            "WHERE id IN (SELECT max(id) FROM hrms.imports_importrecord GROUP BY stage, file_name) ORDER BY id"
        ).fetchall()
    print("\nImport records (latest per file):")
    print(f"  {'stage':<8} {'file':<18} {'outcome':<10} {'rows':>6} {'inserted':>8} {'updated':>7} {'unchanged':>9}")
    for stage, name, outcome, rows, inserted, updated, unchanged in records:
        print(f"  {stage:<8} {name:<18} {outcome:<10} {rows:>6} {inserted:>8} {updated:>7} {unchanged:>9}")
    print("Post-import counts: " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))


def main() -> None:
    url = resources.duty_url(roles.READER)  # the summaries below only read
    print(f"HR database: {redact(os.environ[settings.DATABASE_URL_ENV])}")
    dagster_job("apply_migrations")
    print_ledger(url)
    dagster_job("seed_environment")
    print_seed_summary(url)
    dagster_job("hrms_import", "config/hrms_import.yaml")
    print_import_summary(url)
    print("\nDone. `make dev` opens the Dagster UI with these runs in it.")


if __name__ == "__main__":
    main()
