"""The history import through the asset against raw COPY, in the same process and database.

    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/import_bench.py
        [--users 100000] [--events 1000000] [--memory-events 5000000]

(or with HRMS_DATABASE_URL set). It creates a scratch database next to the HR one (dropped at the
end), applies the migrations, generates a company of --users users with a history file of --events
rows (hrms_pipelines.imports.sample_data), imports ladders, organisation and users (not timed), then:

  raw COPY     the history file into a bare table with the same (typed) columns
  floor        COPY + one set-based INSERT of the same rows into the three history tables with
               their indexes and foreign keys, nothing else: what any correct import must pay
  import       `import_history` materialized through Dagster: read + Pandera validation, COPY into
               staging, resolve users/ladders/levels, duplicate and reference checks, summaries,
               INSERT ... ON CONFLICT of events + compensation + seniority snapshots, validations,
               import record, all in one transaction as the import role
  re-import    the same file again (recognised by its sha256: nothing written)

and prints rows/s of each and the ratios. With --memory-events N (0 to skip) it then imports an
N-row history file for the same users in a fresh child process and prints the child's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrms_pipelines import embedded, settings  # noqa: E402
from hrms_pipelines.imports import sample_data  # noqa: E402
from hrms_pipelines.migrations import files, runner  # noqa: E402

BARE = """CREATE TABLE bench_history_bare (
    email text, event_type text, event_date date, summary text, ladder_code text, level_number smallint,
    previous_level_number smallint, title text, pay_band text, salary numeric(12,2), previous_salary numeric(12,2),
    currency text, notes text)"""


def scratch_database(url: str) -> tuple[str, str]:
    name = f"bench_import_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    import sqlalchemy as sa

    return name, sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def raw_copy(url: str, path: Path) -> tuple[int, float]:
    with psycopg.connect(url) as conn:
        conn.execute(BARE)
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY bench_history_bare FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    copy.write(block)
            rows = cur.rowcount
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_history_bare")
        conn.commit()
    return rows, seconds


SCHEMA_FLOOR = """
    INSERT INTO hrms.imports_importrecord (stage, file_name, file_sha256, outcome)
    VALUES ('history', 'floor', repeat('0', 64), 'running');
    CREATE TEMP TABLE floor_rows AS
        SELECT e.id AS employee_id, b.event_type, b.event_date, coalesce(b.summary, b.event_type) AS summary,
               jsonb_build_object('title', b.title, 'pay_band', b.pay_band) AS details, b.salary, b.previous_salary,
               coalesce(b.currency, 'GHS') AS currency, b.pay_band, l.id AS ladder_id, b.level_number,
               b.previous_level_number, b.title
        FROM bench_history_bare b JOIN hrms.employees_employee e ON e.email = lower(btrim(b.email))
        LEFT JOIN hrms.ladders_ladder l ON l.code = b.ladder_code;
    WITH ins AS (
        INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary, details, import_record_id)
        SELECT employee_id, event_type, event_date, summary, details, currval('hrms.imports_importrecord_id_seq') FROM floor_rows
        ON CONFLICT (employee_id, event_type, event_date) DO NOTHING
        RETURNING id, employee_id, event_type, event_date
    ), joined AS (SELECT ins.id, f.* FROM ins JOIN floor_rows f USING (employee_id, event_type, event_date)
    ), comp AS (
        INSERT INTO hrms.history_compensationsnapshot
            (event_id, employee_id, effective_date, salary, previous_salary, currency, pay_band, import_record_id)
        SELECT id, employee_id, event_date, salary, previous_salary, currency, pay_band,
               currval('hrms.imports_importrecord_id_seq') FROM joined WHERE salary IS NOT NULL RETURNING 1
    )
    INSERT INTO hrms.history_senioritysnapshot
        (event_id, employee_id, effective_date, ladder_id, level_number, previous_level_number, title, import_record_id)
    SELECT id, employee_id, event_date, ladder_id, level_number, previous_level_number, title,
           currval('hrms.imports_importrecord_id_seq') FROM joined WHERE ladder_id IS NOT NULL
"""


def schema_floor(url: str, path: Path) -> float:
    """What any correct import into this schema costs: COPY, then one set-based INSERT of the same
    rows into the three history tables with their indexes, constraints and foreign keys; no
    validation, no summaries, no audit. Rolled back."""
    with psycopg.connect(url) as conn:
        conn.execute(BARE)
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY bench_history_bare FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    copy.write(block)
        conn.execute(SCHEMA_FLOOR)
        seconds = time.perf_counter() - started
        conn.rollback()
    return seconds


def materialize_history(url: str, directory: Path) -> tuple[dict, float]:
    import dagster as dg

    from hrms_pipelines.imports import assets
    from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
    from hrms_pipelines.resources import HrmsDatabase

    started = time.perf_counter()
    result = dg.materialize(
        [assets.import_history],
        resources={"hrms_db": HrmsDatabase(url=url), RESOURCE_KEY: ImportOptions(import_dir=str(directory))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    seconds = time.perf_counter() - started
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}, seconds


def setup_company(url: str, directory: Path) -> None:
    from hrms_pipelines.imports import ladders, org, stage, users
    from hrms_pipelines.imports.options import ImportOptions
    from hrms_pipelines.resources import HrmsDatabase

    db = HrmsDatabase(url=url)
    options = ImportOptions(import_dir=str(directory), create_users=True)
    for s in (ladders.STAGE, org.STAGE, users.STAGE):
        started = time.perf_counter()
        result = stage.run(db, s, options, run_id="bench-setup", log=stage.StageLog())
        print(f"  setup {s.name:<8} {result.counts['rows_read']:>9,} rows in {time.perf_counter() - started:6.1f} s")


def child_import(url: str, directory: str) -> None:
    """--child: import the history file, print rows, seconds and this process's peak RSS."""
    metadata, seconds = materialize_history(url, Path(directory))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"CHILD rows={metadata['rows_read']} seconds={seconds:.1f} peak_rss_mib={peak:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--memory-events", type=int, default=5_000_000)
    parser.add_argument("--child", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_import(*args.child)
        return

    admin_url = os.environ.get(settings.DATABASE_URL_ENV) or embedded.hr_database_url()
    name, url = scratch_database(admin_url)
    work = Path(tempfile.mkdtemp(prefix="hrms-import-bench-"))
    try:
        with psycopg.connect(url) as conn:
            runner.apply(conn, files.discover(settings.migrations_dir()), log=lambda *_: None)
        started = time.perf_counter()
        counts = sample_data.generate(work / "main", users=args.users, events=args.events, seed=1)
        size = (work / "main" / "history.csv").stat().st_size
        print(f"generated {counts['users']:,} users and {counts['history']:,} history rows ({size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - started:.1f} s")
        setup_company(url, work / "main")
        history = work / "main" / "history.csv"

        rows, raw_seconds = raw_copy(url, history)
        raw_rate = rows / raw_seconds
        print(f"\nraw COPY into a bare table : {rows:>9,} rows in {raw_seconds:6.2f} s = {raw_rate:>9,.0f} rows/s")
        floor_seconds = schema_floor(url, history)
        floor_rate = rows / floor_seconds
        print(f"schema floor (COPY + one INSERT into the 3 tables, no checks): {floor_seconds:6.2f} s = {floor_rate:>9,.0f} rows/s "
              f"= {floor_rate / raw_rate:.2f} of raw COPY")
        metadata, seconds = materialize_history(url, work / "main")
        rate = metadata["rows_read"] / seconds
        print(f"import_history (asset)     : {metadata['rows_read']:>9,} rows in {seconds:6.2f} s = {rate:>9,.0f} rows/s "
              f"(stage alone {metadata['seconds']:.2f} s; inserted {metadata['inserted']:,})")
        print(f"  ratio import / raw COPY  : {rate / raw_rate:.3f}   (target >= 0.5)")
        print(f"  ratio import / schema floor: {rate / floor_rate:.2f}")
        again, again_seconds = materialize_history(url, work / "main")
        print(f"re-import, unchanged file  : {again_seconds:6.2f} s, outcome {again['outcome']} "
              f"= {again_seconds / seconds:.3f} of the first import (target < 0.1)")

        if args.memory_events:
            big = work / "big"
            big.mkdir()
            started = time.perf_counter()
            # seed 1 again: the same users as above (already imported), more events each
            sample_data.generate(big, users=args.users, events=args.memory_events, seed=1, org=False)
            (big / "users.csv").unlink()
            print(f"\ngenerated {args.memory_events:,} history rows ({(big / 'history.csv').stat().st_size / 2**30:.2f} GiB) "
                  f"in {time.perf_counter() - started:.0f} s")
            child = subprocess.run([sys.executable, __file__, "--child", url, str(big)], capture_output=True, text=True)
            line = next((l for l in child.stdout.splitlines() if l.startswith("CHILD")), None)
            if line is None:
                print(child.stdout[-3000:], child.stderr[-3000:])
                raise SystemExit("the memory run failed")
            fields = dict(part.split("=") for part in line.split()[1:])
            print(f"import of {int(fields['rows']):,} rows in a fresh process: {float(fields['seconds']):.0f} s, "
                  f"peak RSS {fields['peak_rss_mib']} MiB (target < 1024 MiB)")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        from hrms_pipelines import resources

        for engine_url, engine in list(resources._ENGINES.items()):
            if name in engine_url:
                engine.dispose()
        drop_database(admin_url, name)


if __name__ == "__main__":
    main()
