"""What a night costs as the tables grow: the issue's four scenarios at N = 10k, 100k and 1M events.

    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/nightly_bench.py
        [--sizes 10000 100000 1000000] [--repeat 3] [--baseline-tree /work/main] [--no-first-import]
        [--json nightly.json]

(or the server of HRMS_BENCH_ADMIN_URL). For each N it generates a company of N/10 users with N
history events (hrms_pipelines.imports.sample_data), imports it whole through the `hrms_import`
graph (the base; timed: the first full import), and then, each on a fresh copy of that database
(CREATE DATABASE ... TEMPLATE), runs nights through the whole graph (backups, four stages, their
checks), every import file present as the HR system would leave it -- in --repeat rounds over every
size and scenario, keeping each one's best night (a shared machine's busy minute then does not fall
on one size only):

  delta      history.csv holds only 1,000 new events
  export     history.csv is the full export plus 1,000 new rows at its end
  users      users.csv is the full export with 100 changed and 10 new users (force_update); the night
             before it (not timed) imported the unchanged users.csv with the same options, as every
             night of a schedule does (a known line is only known under the options it was imported with)
  after_delta  night 3 of "full, delta, full": the night before it (not timed) imported a file of 1,000
             new events only; this night history.csv is the full export again, with those 1,000 events
             and 1,000 more (not an append of the last file: before known lines, read and compared whole)

The targets (issue 19) are printed beside the ratios: delta <= 1.5x, export <= 4x, users <= 3x,
after_delta <= 4x from the smallest to the largest N.

It prints per-asset seconds, what the night kept for undo or backup (the undo store's growth, and
any backup folder's) beside the size of the rows it changed, and the ratio of the 1M night to the
10k night. With the largest N it also runs bench/import_bench.py (this tree's, and with
--baseline-tree another checkout's, e.g. main's: "today") in the same run, so the first full import
of 1M events can be read beside that benchmark's figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _scratch  # noqa: E402
from hrms_pipelines import settings  # noqa: E402
from hrms_pipelines.imports import sample_data  # noqa: E402

NEW_EVENTS = 1_000
CHANGED_USERS, NEW_USERS = 100, 10
SCENARIOS = ("delta", "export", "users", "after_delta")
TARGETS = {"delta": 1.5, "export": 4.0, "users": 3.0, "after_delta": 4.0}
ASSETS = ("backup_ladders", "import_ladders", "backup_org", "import_org", "backup_users", "import_users",
          "backup_history", "import_history")
UNDO_TABLES = ("hrms.imports_undoinsert", "hrms.imports_undoupdate")


# ------------------------------------------------------------------------------------------------
# files


def new_events(users_csv: Path, count: int, year: int = 2040) -> list[list[str]]:
    """`count` events that no base file has: a salary change (a compensation snapshot) or a note
    in `year` for the first users."""
    with users_csv.open(newline="") as handle:
        emails = [row[0] for row in list(csv.reader(handle))[1:]]
    rows = []
    for i in range(count):
        email = emails[i % len(emails)]
        day = f"{year}-{1 + (i // len(emails)) % 12:02d}-{1 + (i // (12 * len(emails))) % 28:02d}"
        if i % 2:
            rows.append([email, "note", day, "", "", "", "", "", "", "", "", "", "Nightly note"])
        else:
            rows.append([email, "salary_change", day, "", "", "", "", "", "P2", "9100.00", "8700.00", "GHS", "Review"])
    return rows


def night_files(base: Path, out: Path, scenario: str) -> None:
    """The import folder of one night: the base files, with history.csv or users.csv as the scenario says."""
    out.mkdir(parents=True)
    for path in base.iterdir():
        if path.suffix == ".csv":
            os.link(path, out / path.name)
    if scenario in ("night2_delta", "after_delta"):
        (out / "history.csv").unlink()
        night2 = new_events(base / "users.csv", NEW_EVENTS)
        if scenario == "night2_delta":
            sample_data.write_csv(out / "history.csv", list(sample_data.formats.HISTORY_COLUMNS), night2)
        else:
            shutil.copyfile(base / "history.csv", out / "history.csv")
            with (out / "history.csv").open("a", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(night2 + new_events(base / "users.csv", NEW_EVENTS, 2041))
    elif scenario == "users_before":
        pass
    elif scenario in ("delta", "export"):
        (out / "history.csv").unlink()
        events = new_events(base / "users.csv", NEW_EVENTS)
        if scenario == "export":
            shutil.copyfile(base / "history.csv", out / "history.csv")
            with (out / "history.csv").open("a", newline="") as handle:
                csv.writer(handle, lineterminator="\n").writerows(events)
        else:
            sample_data.write_csv(out / "history.csv", list(sample_data.formats.HISTORY_COLUMNS), events)
    elif scenario == "users":
        (out / "users.csv").unlink()
        with (base / "users.csv").open(newline="") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:]
        step = max(1, len(body) // CHANGED_USERS)
        for i in range(0, min(len(body), step * CHANGED_USERS), step):
            body[i][4] = body[i][4] + " (acting)"              # job title changed in the HR system
        for i in range(NEW_USERS):
            body.append([f"new.hire{i}@nhia.gov.gh", f"NEW{i:06d}", "Esi", "Nyarko", "Officer", "active", "2026-11-02", "",
                         "0.00", "CLAIMS", "VETTING", "ASSESSORS", body[0][0], "CLM", "1"])
        sample_data.write_csv(out / "users.csv", header, body)


# ------------------------------------------------------------------------------------------------
# runs


def materialize(url: str, directory: Path, **options):
    """The hrms_import graph (assets and checks) over `directory`; returns (result, seconds, per-step seconds)."""
    import dagster as dg

    from hrms_pipelines.imports import assets, checks
    from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions
    from hrms_pipelines.resources import PinnedDatabase

    os.environ[settings.IMPORT_DIR_ENV] = str(directory)
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = dg.materialize([*assets.import_assets, *checks.import_checks],
                            resources={"hrms_db": PinnedDatabase(location=url), RESOURCE_KEY: ImportOptions(**options)},
                            instance=instance, raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    seconds = time.perf_counter() - started
    if not result.success:
        failures = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        raise SystemExit("the import failed:\n" + "\n".join(f[:2000] for f in failures))
    steps: dict[str, float] = {}
    begun: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            begun[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in begun:
            steps[event.step_key] = entry.timestamp - begun[event.step_key]
    return result, seconds, steps


def undo_bytes(url: str) -> tuple[int, int]:
    """(sum of the stored sizes of the undo store's rows and index tuples, its relations' total size)."""
    with psycopg.connect(url) as conn:
        logical = conn.execute("""
            SELECT coalesce((SELECT sum(pg_column_size(u.*) + 28 + 2 * 24) FROM hrms.imports_undoinsert u), 0)
                 + coalesce((SELECT sum(pg_column_size(u.*) + 28 + 20 + 40) FROM hrms.imports_undoupdate u), 0)""").fetchone()[0]
        physical = conn.execute("SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) t",
                                [list(UNDO_TABLES)]).fetchone()[0]
    return int(logical), int(physical)


def changed_rows_bytes(url: str, run_id: str) -> tuple[int, int]:
    """(rows the run inserted or updated, their size in their tables) -- found through the undo store."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT DISTINCT table_name FROM hrms.imports_undoinsert i JOIN hrms.imports_importrecord r ON r.id = i.import_record_id "
            "WHERE r.run_id = %s UNION SELECT DISTINCT table_name FROM hrms.imports_undoupdate u "
            "JOIN hrms.imports_importrecord r ON r.id = u.import_record_id WHERE r.run_id = %s", [run_id, run_id]).fetchall()]
        rows = size = 0
        for table in tables:
            n, b = conn.execute(f"""
                SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM hrms.{table} t WHERE t.id IN (
                    SELECT unnest(i.row_ids) FROM hrms.imports_undoinsert i JOIN hrms.imports_importrecord r ON r.id = i.import_record_id
                    WHERE r.run_id = %(run)s AND i.table_name = %(t)s
                    UNION SELECT u.row_id FROM hrms.imports_undoupdate u JOIN hrms.imports_importrecord r ON r.id = u.import_record_id
                    WHERE r.run_id = %(run)s AND u.table_name = %(t)s)""", {"run": run_id, "t": table}).fetchone()
            rows += n
            size += b
    return rows, int(size)


def line_store(url: str) -> str:
    """The known lines' store after the night: entries per stage (one per key, imports/0005) and its size."""
    with psycopg.connect(url) as conn:
        stages = conn.execute("SELECT stage, count(*), count(DISTINCT key_hash) FROM hrms.imports_linehash "
                              "GROUP BY stage ORDER BY stage").fetchall()
        size = conn.execute("SELECT pg_total_relation_size('hrms.imports_linehash')").fetchone()[0]
    entries = ", ".join(f"{stage} {n:,} entries for {keys:,} keys" for stage, n, keys in stages)
    return f"line store after the night: {entries or 'empty'} ({size / 2**20:.1f} MiB with its index)"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def dispose(name: str) -> None:
    from hrms_pipelines import resources

    resources.dispose_engines(name)


def run_night(template: str, base_dir: Path, work: Path, scenario: str, attempt: int) -> dict:
    name, url = _scratch.create(f"bench_night_{scenario}", template=template)
    folder = work / f"{scenario}-{attempt}"
    backups = work / f"backups-{scenario}-{attempt}"
    os.environ[settings.BACKUP_DIR_ENV] = str(backups)
    try:
        options = {"create_users": True, **({"force_update": True} if scenario == "users" else {})}
        before = {"after_delta": "night2_delta", "users": "users_before"}.get(scenario)
        if before:          # the night before, not timed
            night_files(base_dir, work / f"{scenario}-{attempt}-before", before)
            materialize(url, work / f"{scenario}-{attempt}-before", **options)
            shutil.rmtree(work / f"{scenario}-{attempt}-before", ignore_errors=True)
        night_files(base_dir, folder, scenario)
        logical_before, physical_before = undo_bytes(url)
        result, seconds, steps = materialize(url, folder, **options)
        logical_after, physical_after = undo_bytes(url)
        rows, size = changed_rows_bytes(url, result.run_id)
        metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
        path = metadata.get("import_history", {}).get("path")
        known = {a: metadata.get(a, {}).get("known_lines") for a in ("import_users", "import_history")}
        known = ", ".join(f"{a}: {v.value:,} known lines skipped" for a, v in known.items() if v is not None and v.value)
        phase = metadata.get("import_history", {}).get("seconds_known_lines")
        if phase is not None and phase.value:
            known += f" (import_history's known_lines phase {phase.value:.2f} s)"
        return {"known": known, "store": line_store(url),
            "seconds": seconds, "steps": steps, "changed_rows": rows, "changed_bytes": size,
            "kept_bytes": logical_after - logical_before, "kept_physical": physical_after - physical_before,
            "backup_bytes": folder_bytes(backups), "path": path.value if path is not None else "",
        }
    finally:
        dispose(name)
        _scratch.drop(name)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(backups, ignore_errors=True)


def base_import(n: int, work: Path) -> tuple[str, Path, dict]:
    """The base company imported whole into a template database; returns (its name, its files, timings)."""
    base_dir = work / f"base-{n}"
    started = time.perf_counter()
    counts = sample_data.generate(base_dir, users=max(10, n // 10), events=n, seed=1)
    print(f"\nN = {n:,}: generated {counts['users']:,} users and {counts['history']:,} events "
          f"({(base_dir / 'history.csv').stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f} s")
    name, url = _scratch.create(f"bench_night_base_{n}")
    _scratch.migrate(url)
    os.environ[settings.BACKUP_DIR_ENV] = str(work / f"backups-base-{n}")
    result, seconds, steps = materialize(url, base_dir, create_users=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    dispose(name)
    print(f"  first full import (whole hrms_import graph): {seconds:.1f} s; import_history {steps.get('import_history', 0):.1f} s, "
          f"import_users {steps.get('import_users', 0):.1f} s")
    return name, base_dir, {"seconds": seconds, "steps": steps}


def import_bench(tree: Path, python: Path, users: int, events: int) -> str:
    """import_bench.py of `tree` on this run's server; its import_history line."""
    env = dict(os.environ, **{_scratch.ADMIN_URL_ENV: _scratch.admin_url()})
    done = subprocess.run([str(python), str(tree / "bench" / "import_bench.py"), "--users", str(users), "--events", str(events),
                           "--memory-events", "0"], cwd=tree, env=env, capture_output=True, text=True)
    line = next((l for l in done.stdout.splitlines() if l.startswith("import_history (asset)")), None)
    return line or f"failed: {(done.stdout + done.stderr)[-1500:]}"


def write_json(path: Path, args: argparse.Namespace, table: dict[int, dict[str, dict]], firsts: dict[int, dict]) -> None:
    """The best night of each size and scenario, and each size's first full import, as one JSON document."""
    nights = [{"size": n, "scenario": scenario, **{k: v for k, v in night.items() if k != "path"}}
              for n, by_scenario in table.items() for scenario, night in by_scenario.items()]
    document = {"bench": "nightly_bench", "sizes": args.sizes, "repeat": args.repeat, "nights": nights,
                "first_imports": [{"size": n, **first} for n, first in firsts.items()]}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


# ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of nights (each round runs every size and scenario once; "
                                                            "the best night of each is kept)")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout (e.g. /work/main) whose import_bench.py runs beside")
    parser.add_argument("--first-import-runs", type=int, default=1, help="runs of import_bench.py per tree, alternating")
    parser.add_argument("--no-first-import", action="store_true", help="skip bench/import_bench.py at the largest N")
    parser.add_argument("--json", type=Path, help="also write the figures to this file (docs/plots.py draws them)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hrms-nightly-bench-"))
    templates: dict[int, tuple[str, Path]] = {}
    table: dict[int, dict[str, dict]] = {n: {} for n in args.sizes}
    firsts: dict[int, dict] = {}
    try:
        for n in args.sizes:
            template, base_dir, first = base_import(n, work)
            templates[n] = (template, base_dir)
            firsts[n] = first
        # rounds across sizes, so that a busy minute on a shared machine does not fall on one size only
        for attempt in range(args.repeat):
            for n in args.sizes:
                template, base_dir = templates[n]
                for scenario in args.scenarios:
                    night = run_night(template, base_dir, work, scenario, attempt)
                    best = table[n].get(scenario)
                    if best is None or night["seconds"] < best["seconds"]:
                        table[n][scenario] = night
        for n in args.sizes:
            print(f"\nN = {n:,} (best of {args.repeat})")
            for scenario in args.scenarios:
                best = table[n][scenario]
                steps = best["steps"]
                checks = sum(v for k, v in steps.items() if k not in ASSETS)
                print(f"  {scenario:<7} {best['seconds']:6.2f} s  "
                      + "  ".join(f"{a.replace('import_', 'i_').replace('backup_', 'b_')} {steps.get(a, 0):.2f}" for a in ASSETS)
                      + f"  checks {checks:.2f}")
                print(f"          kept {best['kept_bytes']:,} B in the undo store ({best['kept_physical']:,} B of pages), "
                      f"backups {best['backup_bytes']:,} B; changed {best['changed_rows']:,} rows of {best['changed_bytes']:,} B "
                      f"(kept / changed = {best['kept_bytes'] / max(best['changed_bytes'], 1):.2f})"
                      + (f"; {best['path']}" if best["path"] else "") + (f"; {best['known']}" if best.get("known") else ""))
                if best.get("store"):
                    print(f"          {best['store']}")

        if args.json:
            write_json(args.json, args, table, firsts)

        small, large = min(args.sizes), max(args.sizes)
        print("\n| night | " + " | ".join(f"N = {n:,}" for n in args.sizes) + f" | {large // 1000:,}k / {small // 1000:,}k | target |")
        print("|---|" + "---|" * (len(args.sizes) + 2))
        labels = {"delta": "a file of only the 1,000 new events", "export": "the full history export + 1,000 new rows",
                  "users": "users export, 100 changed + 10 new (force_update)",
                  "after_delta": "night 3: the full export after a delta night, + 1,000 new rows"}
        for scenario in args.scenarios:
            cells = [f"{table[n][scenario]['seconds']:.2f} s" for n in args.sizes]
            ratio = table[large][scenario]["seconds"] / table[small][scenario]["seconds"]
            print(f"| {labels[scenario]} | " + " | ".join(cells) + f" | **{ratio:.2f}×** | ≤ {TARGETS[scenario]}× |")
        for scenario, label in (("after_delta", "kept per night, night 3 (undo store)"),
                                ("delta", "kept per night, delta night (undo store)"),
                                ("export", "kept per night, export night (undo store)"),
                                ("users", "kept per night, users night (undo store)")):
            if scenario not in args.scenarios:
                continue
            cells = [f"{table[n][scenario]['kept_bytes'] / 1e3:,.1f} kB = {table[n][scenario]['kept_bytes'] / max(table[n][scenario]['changed_bytes'], 1):.2f}× "
                     f"the {table[n][scenario]['changed_bytes'] / 1e3:,.0f} kB changed" for n in args.sizes]
            ratio = table[large][scenario]["kept_bytes"] / max(table[small][scenario]["kept_bytes"], 1)
            print(f"| {label} | " + " | ".join(cells) + f" | {ratio:.2f}× | ≤ 2× the changed rows |")
        print("| first full import (whole graph) | " + " | ".join(f"{firsts[n]['seconds']:.1f} s" for n in args.sizes) + " | | |")

        if not args.no_first_import:
            users = max(10, large // 10)
            print(f"\nfirst full import of {large:,} events: this run's base import spent "
                  f"{firsts[large]['steps'].get('import_history', 0):.1f} s in import_history")
            trees = [(args.baseline_tree, args.baseline_tree / ".venv" / "bin" / "python")] if args.baseline_tree else []
            trees.append((settings.PROJECT_ROOT, Path(sys.executable)))
            for _ in range(args.first_import_runs):
                for tree, python in trees:
                    line = import_bench(tree, python if python.exists() else Path(sys.executable), users, large)
                    print(f"  bench/import_bench.py ({tree}): {line}")
    finally:
        for template, _dir in templates.values():
            dispose(template)
            _scratch.drop(template)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
