"""The manual's benchmark plots, drawn with matplotlib from the benches' JSON output (`make plots`).

    .venv/bin/python docs/plots.py --nightly nightly.json [--nightly-before before.json]
                                   [--peers peers.json] --out docs/images

--nightly: bench/nightly_bench.py --json: each night's seconds against the size of the tables
  (history events), one line per scenario -> nightly-cost.png; and what each night kept for undo
  beside the size of the rows it changed -> nightly-kept.png. --nightly-before: the same bench run on
  another tree (bench/before/nightly_bench_f13bf73.py: before change capture), drawn dashed in the
  same colours (its "tree" field names it in the legend), and what its nights kept (its backups) as
  dashed outlines behind today's bars. A scenario the other tree has no figure for is marked
  "(today only)" in the legend.
--peers: bench/peers_bench.py --json, read tolerantly (its format may grow): a list of records,
  each labelled by its first text field among kind/tool/peer/name/label, measured by rows_per_cpu_second,
  seconds or the first other number, against size/rows/events/n when there is one (lines), else
  as bars -> peers.png. Without --peers no peers plot is drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SCENARIOS = {
    "delta": "a file of only the 1,000 new events",
    "export": "the full history export + 1,000 new rows",
    "users": "the users export, 100 changed + 10 new",
    "after_delta": "the full export after a delta night, + 1,000 new",
}
NOTE = "small run on a loaded 2-core machine: read the shape, not the absolute seconds"


def thousands(value: float, _pos=None) -> str:
    return f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k" if value >= 1e3 else f"{value:g}"


def nights(path: Path) -> dict[str, list[dict]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    by_scenario: dict[str, list[dict]] = {}
    for night in document["nights"]:
        by_scenario.setdefault(night["scenario"], []).append(night)
    for series in by_scenario.values():
        series.sort(key=lambda night: night["size"])
    return by_scenario


def tree_label(path: Path) -> str:
    """The legend's name of another tree's run: its JSON's "tree" field, else the file's name."""
    return json.loads(path.read_text(encoding="utf-8")).get("tree") or path.stem


def plot_nightly(now: Path, before: Path | None, out: Path) -> list[Path]:
    today = nights(now)
    earlier = nights(before) if before else {}
    colours = dict(zip(SCENARIOS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))

    fig, ax = plt.subplots(figsize=(8, 5.5 if before else 5), dpi=110)
    for scenario, series in today.items():
        colour = colours.get(scenario)
        label = SCENARIOS.get(scenario, scenario) + (" (today only)" if before and scenario not in earlier else "")
        ax.plot([n["size"] for n in series], [n["seconds"] for n in series], "o-", color=colour, label=label)
        if scenario in earlier:
            old = earlier[scenario]
            ax.plot([n["size"] for n in old], [n["seconds"] for n in old], "o--", color=colour, alpha=0.7)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(FuncFormatter(thousands))
    ax.set_xlabel("history events in the tables (users = events / 10)")
    ax.set_ylabel("seconds per night (whole hrms_import graph)")
    ax.set_title("What a nightly import costs as the tables grow")
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if before:
        handles += [Line2D([], [], color="black", linestyle="-", marker="o"),
                    Line2D([], [], color="black", linestyle="--", marker="o", alpha=0.7)]
        labels += ["today", tree_label(before)]
    ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.text(0.99, 0.01, NOTE, ha="right", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    cost = out / "nightly-cost.png"
    fig.savefig(cost)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    width = 0.8 / max(len(today), 1)
    sizes = sorted({n["size"] for series in today.values() for n in series})
    for i, (scenario, series) in enumerate(today.items()):
        kept = {n["size"]: n["kept_bytes"] / 1e3 for n in series}
        changed = {n["size"]: n["changed_bytes"] / 1e3 for n in series}
        xs = [j + i * width for j in range(len(sizes))]
        ax.bar(xs, [kept.get(s, 0) for s in sizes], width * 0.9, color=colours.get(scenario),
               label=f"kept for undo: {SCENARIOS.get(scenario, scenario)}")
        ax.scatter(xs, [changed.get(s, 0) for s in sizes], marker="_", s=400, color="black", zorder=3,
                   label="size of the rows the night changed" if i == 0 else None)
        old = {n["size"]: n["kept_bytes"] / 1e3 for n in earlier.get(scenario, []) if n.get("kept_bytes")}
        if old:
            ax.bar(xs, [old.get(s, 0) for s in sizes], width * 0.9, fill=False, edgecolor=colours.get(scenario),
                   linestyle="--", zorder=1)
    ax.set_xticks([j + width * (len(today) - 1) / 2 for j in range(len(sizes))], [thousands(s) + " events" for s in sizes])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_ylabel("kB per night (log scale)")
    ax.set_title("What a night keeps for undo follows the change, not the tables")
    handles, labels = ax.get_legend_handles_labels()
    if any(n.get("kept_bytes") for series in earlier.values() for n in series):
        handles.append(Patch(fill=False, edgecolor="black", linestyle="--"))
        labels.append(f"{tree_label(before)}: its backups")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.text(0.99, 0.01, NOTE, ha="right", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    kept_path = out / "nightly-kept.png"
    fig.savefig(kept_path)
    plt.close(fig)
    return [cost, kept_path]


def records(document) -> list[dict]:
    """The first list of objects in the document: itself, or a value of it (depth first)."""
    if isinstance(document, list) and document and all(isinstance(r, dict) for r in document):
        return document
    if isinstance(document, dict):
        for value in document.values():
            found = records(value)
            if found:
                return found
    return []


def first_key(rows: list[dict], candidates: tuple[str, ...], kind: type | tuple) -> str | None:
    for key in candidates:
        if all(isinstance(r.get(key), kind) and not isinstance(r.get(key), bool) for r in rows):
            return key
    return None


def plot_peers(path: Path, out: Path) -> Path:
    rows = records(json.loads(path.read_text(encoding="utf-8")))
    if not rows:
        raise SystemExit(f"{path}: no list of records to plot")
    label = first_key(rows, ("kind", "tool", "peer", "name", "label", "implementation", "what"), str)
    x = first_key(rows, ("size", "rows", "events", "n"), (int, float))
    if x is not None and len({r[x] for r in rows}) == 1:
        x = None  # one size (peers_bench.py runs each contender once): bars
    numbers = [k for k in rows[0] if k not in (x, label) and isinstance(rows[0][k], (int, float))
               and not isinstance(rows[0][k], bool)]
    y = first_key(rows, ("rows_per_cpu_second", "rows_per_second", "seconds", *numbers), (int, float))
    if label is None or y is None:
        raise SystemExit(f"{path}: cannot tell the label and the figure of its records (keys: {sorted(rows[0])})")
    print(f"peers: {len(rows)} records; label {label!r}, figure {y!r}, size {x!r}")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if x is not None:
        for name in dict.fromkeys(r[label] for r in rows):
            series = sorted((r for r in rows if r[label] == name), key=lambda r: r[x])
            ax.plot([r[x] for r in series], [r[y] for r in series], "o-", label=name)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(thousands))
        ax.set_xlabel(x.replace("_", " "))
        ax.legend(fontsize=8)
    else:
        bars = ax.barh([r[label] for r in rows], [r[y] for r in rows])
        ax.bar_label(bars, labels=[f"{r[y]:,.0f}" for r in rows], fontsize=8, padding=3)
        ax.xaxis.set_major_formatter(FuncFormatter(thousands))
        ax.invert_yaxis()
    ax.yaxis.set_major_formatter(FuncFormatter(thousands)) if x is not None else None
    ax.set_ylabel(y.replace("_", " ") if x is not None else "")
    if x is None:
        ax.set_xlabel(y.replace("_", " "))
    ax.set_title("This import beside its peers")
    ax.grid(True, alpha=0.3)
    fig.text(0.99, 0.01, NOTE, ha="right", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    target = out / "peers.png"
    fig.savefig(target)
    plt.close(fig)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nightly", type=Path, help="bench/nightly_bench.py --json output")
    parser.add_argument("--nightly-before", type=Path, help="the same bench on another tree, drawn dashed beside it")
    parser.add_argument("--peers", type=Path, help="bench/peers_bench.py --json output (optional)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    args = parser.parse_args(argv)
    if not args.nightly and not args.peers:
        parser.error("nothing to plot: give --nightly and/or --peers")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.nightly:
        written += plot_nightly(args.nightly, args.nightly_before, args.out)
    if args.peers:
        written.append(plot_peers(args.peers, args.out))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
