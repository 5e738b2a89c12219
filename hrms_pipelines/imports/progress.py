"""Progress of a long stage: a log line every few seconds while a file is read and validated (rows
done, rows/s, an ETA from the rows the reader counted when it inspected the file); the seconds of
each phase go to the metadata (StageContext.lap)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd


from hrms_pipelines.metadata import duration

EVERY_SECONDS = 5.0


class Progress:
    """`advance(rows)` after each chunk; logs at most every `every` seconds."""

    def __init__(self, log: Callable[[str], None], what: str, total: int | None, every: float | None = None):
        self.log, self.what, self.total = log, what, total
        self.every = EVERY_SECONDS if every is None else every
        self.started = self.last = time.monotonic()
        self.done = 0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total and rate > 0:
            left = max(self.total - self.done, 0)
            tail = f", {left:,} rows and about {duration(left / rate)} left (ETA)"
        else:
            tail = ""
        return f"{self.what}: {self.done:,} rows read and validated, {rate:,.0f} rows/s{tail}"

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log(self.line())


def ticking(progress: Progress, prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None):
    """A `prepare` hook for reader.load_file that also counts the chunks' rows."""
    def hook(chunk: pd.DataFrame) -> pd.DataFrame:
        progress.advance(len(chunk))
        return prepare(chunk) if prepare is not None else chunk
    return hook
