"""Helpers for metadata people read in the Dagster UI."""

from __future__ import annotations

from collections.abc import Sequence


def duration(seconds: float) -> str:
    """A duration as people read it in a progress line: 42s, 3m07s, 2h05m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, limit: int | None = None) -> str:
    """A markdown table; with `limit`, the first rows and a line saying how many were left out."""
    def cell(value: object) -> str:
        return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")

    shown = rows if limit is None else rows[:limit]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"\n…and {len(rows) - limit} more")
    return "\n".join(lines)
