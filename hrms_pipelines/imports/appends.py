"""Append-aware files (placeholder until the reader's prefix API lands; see plan())."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tail:
    offset: int
    first_row_number: int
    previous_rows: int
    previous_record: int
    rows_estimate: int | None = None


def plan(ctx, stage, infos, options) -> None:
    return None


def describe(file) -> str:
    return ""
