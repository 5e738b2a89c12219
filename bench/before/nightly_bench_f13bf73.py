"""bench/nightly_bench.py adapted to the tree before change capture (f13bf73): the "before" line of
docs/images/nightly-cost.png.

Change capture came with merge a75ff1a ("nightly runs cost what changed"); its first parent f13bf73
has no nightly bench. This is bench/nightly_bench.py as of c664aa4 ("today" in the plot)
with only what that tree's code needs changed, so the nights are the same files through the same
graph and the two lines compare. To reproduce, from a checkout of this project:

    here=$PWD
    git worktree add --detach /tmp/before f13bf73
    cp bench/before/nightly_bench_f13bf73.py /tmp/before/bench/
    cd /tmp/before && make install
    .venv/bin/python -m hrms_pipelines.local run -- .venv/bin/python bench/nightly_bench_f13bf73.py \\
        --sizes 10000 100000 --repeat 2 --no-first-import --json "$here/bench/results/nightly-before-change-capture.json"
    cd "$here" && git worktree remove --force /tmp/before

(the embedded PostgreSQL of that tree, under /tmp/before/.hrms, stops when the command ends). It must
run from the old tree's bench/ folder: it imports that tree's hrms_pipelines and bench/_scratch.py.
Then today's line right after it, from this checkout: `.venv/bin/python -m hrms_pipelines.local run --
.venv/bin/python bench/nightly_bench.py --sizes 10000 100000 --repeat 2 --no-first-import --json
bench/results/nightly-today.json`, and `make plots` (docs/benchmarks.md, "Before change capture").

What f13bf73 does on each night: every stage whose files differ from the last imported ones backs up
its tables whole (COPY, gzip) and then reads, validates (Pandera, COPY into staging, the whole-table
validations) and compares every row of its files with the stored rows before inserting the new ones;
a stage whose files are all unchanged (same sha256, same options) is skipped. There is no undo store
and no known lines.

What differs from bench/nightly_bench.py:
- the undo store (hrms.imports_undoinsert / _undoupdate) does not exist: what a night kept to be
  taken back was its backups, so kept_bytes (and kept_physical) is the growth of the backup folder
  during the timed night (backup_bytes, as today, also holds the untimed night before's backups);
  changed_rows and changed_bytes (found through the undo store today) are null;
- no `known_lines` or `path` metadata (reported as absent);
- the JSON says which tree it measured ("tree": "f13bf73").
Every scenario runs as in today's bench (the same files, options and untimed night before):

  delta      history.csv holds only 1,000 new events
  export     history.csv is the full export plus 1,000 new rows at its end
  users      users.csv is the full export with 100 changed and 10 new users (force_update), after an
             untimed night that imported the unchanged users.csv with the same options
  after_delta  night 3 of "full, delta, full": the full export again with the delta night's 1,000
             events and 1,000 more, after an untimed delta night
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


def changed_rows_bytes(url: str, run_id: str) -> tuple[None, None]:
    """Found through the undo store today; f13bf73 has none."""
    return None, None


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
        backed_up_before = folder_bytes(backups)  # the untimed night before's backups are not this night's
        result, seconds, steps = materialize(url, folder, **options)
        kept = folder_bytes(backups) - backed_up_before
        rows, size = changed_rows_bytes(url, result.run_id)
        metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
        path = metadata.get("import_history", {}).get("path")
        known = {a: metadata.get(a, {}).get("known_lines") for a in ("import_users", "import_history")}
        known = ", ".join(f"{a}: {v.value:,} known lines skipped" for a, v in known.items() if v is not None and v.value)
        outcomes = ", ".join(f"{a}: {m['outcome'].value}" for a, m in metadata.items() if "outcome" in m)
        return {"known": known, "outcomes": outcomes,
            "seconds": seconds, "steps": steps, "changed_rows": rows, "changed_bytes": size,
            "kept_bytes": kept, "kept_physical": kept,
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
    document = {"bench": "nightly_bench", "tree": "f13bf73 (before change capture)", "sizes": args.sizes, "repeat": args.repeat, "nights": nights,
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
                print(f"          kept {best['kept_bytes']:,} B of backups (no undo store in f13bf73); stages: {best['outcomes']}"
                      + (f"; {best['path']}" if best["path"] else "") + (f"; {best['known']}" if best.get("known") else ""))

        if args.json:
            write_json(args.json, args, table, firsts)

        small, large = min(args.sizes), max(args.sizes)
        if args.scenarios == list(SCENARIOS):
            print("\n| night | " + " | ".join(f"N = {n:,}" for n in args.sizes) + f" | {large // 1000:,}k / {small // 1000:,}k | target |")
            print("|---|" + "---|" * (len(args.sizes) + 2))
            labels = {"delta": "a file of only the 1,000 new events", "export": "the full history export + 1,000 new rows",
                      "users": "users export, 100 changed + 10 new (force_update)",
                      "after_delta": "night 3: the full export after a delta night, + 1,000 new rows"}
            for scenario in SCENARIOS:
                cells = [f"{table[n][scenario]['seconds']:.2f} s" for n in args.sizes]
                ratio = table[large][scenario]["seconds"] / table[small][scenario]["seconds"]
                print(f"| {labels[scenario]} | " + " | ".join(cells) + f" | **{ratio:.2f}×** | ≤ {TARGETS[scenario]}× |")
            for scenario in SCENARIOS:
                cells = [f"{table[n][scenario]['kept_bytes'] / 1e6:,.2f} MB" for n in args.sizes]
                print(f"| kept per night, {scenario} night (backups; no undo store) | " + " | ".join(cells) + " | | |")
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
