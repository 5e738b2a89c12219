"""The history import against the loaders a data engineer would otherwise pick, on the same file.

    uv sync --extra test --extra bench          # dlt, duckdb, pyarrow: the `bench` extra only
    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/peers_bench.py \\
        [--users 20000] [--events 200000] [--only import,dlt-arrow] [--chunk-rows N] [--json peers.json]

(or the server of HRMS_BENCH_ADMIN_URL; the server CPU is then not measured). It generates a company
(hrms_pipelines.imports.sample_data), imports its ladders, organisation and users into a template
database, and runs every contender in a FRESH PROCESS on ITS OWN COPY of that database:

  copy         raw COPY of the file into a bare table (no key, no check)
  floor        the schema floor: COPY + one set-based INSERT into the three history tables with their
               keys, indexes and foreign keys, nothing else (bench/import_bench.py's SCHEMA_FLOOR)
  import       the history stage (stage.run: read + Pandera, COPY staging, resolve, checks, summaries,
               inserts, change capture, validations, import record), as the import role
  dlt-arrow    dlt, DuckDB reading the CSV into Arrow record batches, loaded with COPY (csv loader
               files), write_disposition="merge" on the natural key (email, event_type, event_date)
  dlt-pandas   dlt, pandas reading the CSV in chunks, dlt's default loader files, the same merge

For each: rows per CPU second where CPU = the process (user + system, its own getrusage) + its server
backends (the postmaster's reaped children's CPU, read from /proc: backends that ended during the
run, autovacuum workers included), wall seconds, peak RSS of the process; then the ratios and the
import's phase table (seconds per phase of the stage). `--json FILE` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _scratch  # noqa: E402

CONTENDERS = ("copy", "floor", "import", "dlt-arrow", "dlt-pandas")
KEY = ["email", "event_type", "event_date"]
BATCH = 100_000


# ---------------------------------------------------------------------------------------- children

def child_copy(url: str, path: Path) -> dict:
    import import_bench

    rows, _ = import_bench.raw_copy(url, path)
    return {"rows": rows}


def child_floor(url: str, path: Path) -> dict:
    import import_bench

    with psycopg.connect(url) as conn:
        conn.execute(import_bench.BARE)
        rows = import_bench.copy_file(conn, path)
        conn.execute(import_bench.SCHEMA_FLOOR)
        conn.commit()
    return {"rows": rows}


def child_import(url: str, path: Path) -> dict:
    from hrms_pipelines import settings
    from hrms_pipelines.imports import history, stage
    from hrms_pipelines.imports.options import ImportOptions
    from hrms_pipelines.resources import PinnedDatabase

    os.environ[settings.IMPORT_DIR_ENV] = str(path.parent)
    chunk = int(os.environ.get("PEERS_BENCH_CHUNK_ROWS") or 0)   # --chunk-rows: a lever (memory vs CPU)
    options = ImportOptions(history_file=path.name, **({"chunk_rows": chunk} if chunk else {}))
    result = stage.run(PinnedDatabase(location=url), history.STAGE, options,
                       run_id="peers-bench", log=stage.StageLog())
    return {"rows": result.counts["rows_read"], "inserted": result.counts["inserted"],
            "rejected": result.counts["rejected"], "phases": result.phases}


def _dlt_pipeline(url: str, name: str, work: Path):
    import dlt
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    from urllib.parse import quote

    with psycopg.connect(url) as conn:      # where libpq really connects (the embedded server: a socket folder)
        info = conn.info
        host, port, user, password, database = info.host, info.port, info.user, info.password or "", info.dbname
    # dlt wants a host name; libpq takes the socket folder from the query, which wins over it
    credentials = (f"postgresql://{quote(user)}:{quote(password)}@localhost:{port}/{database}"
                   + (f"?host={quote(host)}" if host.startswith("/") else "")).replace("@localhost", f"@{host}" if not host.startswith("/") else "@localhost")
    return dlt.pipeline(pipeline_name=name, destination=dlt.destinations.postgres(credentials=credentials),
                        dataset_name="peers", pipelines_dir=str(work))


def child_dlt_arrow(url: str, path: Path) -> dict:
    import dlt
    import duckdb

    def batches():
        con = duckdb.connect()
        relation = con.sql(f"SELECT * FROM read_csv('{path}', header = true)")
        reader = relation.fetch_record_batch(BATCH) if hasattr(relation, "fetch_record_batch") else relation.arrow()
        for batch in reader:
            yield batch

    resource = dlt.resource(batches, name="history", write_disposition="merge", primary_key=KEY)
    with tempfile.TemporaryDirectory(prefix="peers-dlt-") as work:
        pipeline = _dlt_pipeline(url, "peers_arrow", Path(work))
        pipeline.run(resource, loader_file_format="csv")
        rows = pipeline.last_trace.last_normalize_info.row_counts.get("history", 0)
    return {"rows": rows}


def child_dlt_pandas(url: str, path: Path) -> dict:
    import dlt
    import pandas as pd

    def frames():
        yield from pd.read_csv(path, chunksize=BATCH)

    resource = dlt.resource(frames, name="history", write_disposition="merge", primary_key=KEY)
    with tempfile.TemporaryDirectory(prefix="peers-dlt-") as work:
        pipeline = _dlt_pipeline(url, "peers_pandas", Path(work))
        pipeline.run(resource)
        rows = pipeline.last_trace.last_normalize_info.row_counts.get("history", 0)
    return {"rows": rows}


CHILDREN = {"copy": child_copy, "floor": child_floor, "import": child_import,
            "dlt-arrow": child_dlt_arrow, "dlt-pandas": child_dlt_pandas}


def setup(url: str, directory: Path) -> None:
    """--setup: ladders, organisation and users of the generated company (not timed)."""
    from hrms_pipelines import settings
    from hrms_pipelines.imports import ladders, org, stage, users
    from hrms_pipelines.imports.options import ImportOptions
    from hrms_pipelines.resources import PinnedDatabase

    os.environ[settings.IMPORT_DIR_ENV] = str(directory)
    db = PinnedDatabase(location=url)
    for s in (ladders.STAGE, org.STAGE, users.STAGE):
        stage.run(db, s, ImportOptions(create_users=True), run_id="peers-setup", log=stage.StageLog())


# ------------------------------------------------------------------------------------------ parent

def _postmaster_cpu(url: str) -> tuple[int | None, float]:
    """(postmaster pid, CPU seconds of its reaped children) -- (None, 0) when the server is not local."""
    try:
        with psycopg.connect(url) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        parent = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return parent, _reaped(parent)
    except (OSError, ValueError, IndexError):
        return None, 0.0


def _reaped(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")   # cutime + cstime


def _wait_backends_gone(url: str, database: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(600):
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                [database]).fetchone()[0]
            if not left:
                return
            time.sleep(0.1)


def run_contender(kind: str, template: str, path: Path) -> dict:
    name, url = _scratch.create(f"peers_{kind.replace('-', '_')}", template=template)
    try:
        postmaster, before = _postmaster_cpu(_scratch.admin_url())
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "--child", kind, url, str(path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        out, err = child.communicate()
        wall = time.perf_counter() - started
        if child.returncode:
            raise SystemExit(f"{kind} failed:\n{out[-3000:]}\n{err[-3000:]}")
        figures = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        _wait_backends_gone(_scratch.admin_url(), name)
        server = _reaped(postmaster) - before if postmaster else None
        process = figures.pop("cpu")
        cpu = process + (server or 0.0)
        figures.update(kind=kind, wall=wall, process_cpu=process, server_cpu=server, cpu=cpu,
                       rows_per_cpu_second=figures["rows"] / cpu if cpu else 0.0,
                       rows_per_wall_second=figures["rows"] / wall if wall else 0.0)
        return figures
    finally:
        _scratch.drop(name)


def child_main(kind: str, url: str, path: str) -> None:
    import resource

    figures = CHILDREN[kind](url, Path(path))
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    figures.update(cpu=own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime,   # worker processes count too
                   peak_rss_mib=max(own.ru_maxrss, workers.ru_maxrss) / 1024)
    print(json.dumps(figures))


def print_table(results: list[dict]) -> None:
    print(f"\n{'contender':<11} {'rows':>9} {'wall s':>8} {'proc CPU s':>10} {'server CPU s':>12} {'rows/CPU-s':>11} "
          f"{'rows/wall-s':>11} {'peak RSS MiB':>12}")
    for r in results:
        server = f"{r['server_cpu']:.1f}" if r["server_cpu"] is not None else "n/a"
        print(f"{r['kind']:<11} {r['rows']:>9,} {r['wall']:>8.1f} {r['process_cpu']:>10.1f} {server:>12} "
              f"{r['rows_per_cpu_second']:>11,.0f} {r['rows_per_wall_second']:>11,.0f} {r['peak_rss_mib']:>12.0f}")
    by = {r["kind"]: r for r in results}
    if "import" in by:
        imp = by["import"]["rows_per_cpu_second"]
        targets = {"dlt-arrow": ">= 0.5 (moonshot 1.0)", "dlt-pandas": ">= 2", "floor": ">= 0.85", "copy": ""}
        print("\nimport per CPU second / contender's:")
        for kind, target in targets.items():
            if kind in by and by[kind]["rows_per_cpu_second"]:
                print(f"  / {kind:<11} {imp / by[kind]['rows_per_cpu_second']:6.2f}   target {target or '-'}")
        print(f"  peak RSS {by['import']['peak_rss_mib']:.0f} MiB (target <= 256 MiB)")
        phases = by["import"].get("phases") or {}
        total = sum(phases.values()) or 1.0
        print("\nimport phases (seconds of the stage, share):")
        for phase, seconds in sorted(phases.items(), key=lambda p: -p[1]):
            print(f"  {phase:<16} {seconds:7.2f} s  {seconds / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    parser.add_argument("--json", type=Path, help="write the figures to this file (JSON)")
    parser.add_argument("--chunk-rows", type=int, default=0, help="the import's chunk_rows (default: the option's default)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "URL", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--setup", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return
    if args.setup:
        setup(args.setup[0], Path(args.setup[1]))
        return
    from hrms_pipelines.imports import sample_data

    if args.chunk_rows:
        os.environ["PEERS_BENCH_CHUNK_ROWS"] = str(args.chunk_rows)
    kinds = [k for k in args.only.split(",") if k]
    unknown = set(kinds) - set(CONTENDERS)
    if unknown:
        raise SystemExit(f"unknown contender(s) {sorted(unknown)}; known: {', '.join(CONTENDERS)}")
    missing = [m for m in ("dlt", "duckdb", "pyarrow") if importlib.util.find_spec(m) is None]
    if missing and any(k.startswith("dlt") for k in kinds):
        print(f"{', '.join(missing)} not installed (the `bench` extra: uv sync --extra test --extra bench): "
              "the dlt contenders are left out")
        kinds = [k for k in kinds if not k.startswith("dlt")]
    template, url = _scratch.create("peers_template")
    work = Path(tempfile.mkdtemp(prefix="hrms-peers-bench-"))
    try:
        _scratch.migrate(url)
        started = time.perf_counter()
        counts = sample_data.generate(work, users=args.users, events=args.events, seed=1)
        path = work / "history.csv"
        print(f"generated {counts['users']:,} users and {counts['history']:,} history rows "
              f"({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s")
        subprocess.run([sys.executable, __file__, "--setup", url, str(work)], check=True)
        results = []
        for kind in kinds:
            results.append(run_contender(kind, template, path))
            r = results[-1]
            print(f"  {kind:<11} {r['rows']:,} rows, {r['wall']:.1f} s wall, {r['rows_per_cpu_second']:,.0f} rows per CPU second",
                  flush=True)
        print_table(results)
        if args.json:
            args.json.write_text(json.dumps({"users": args.users, "events": args.events, "contenders": results}, indent=2))
            print(f"\nfigures written to {args.json}")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        _scratch.drop(template)


if __name__ == "__main__":
    main()
