"""What the shared steps of a stage (appends, merge) need of the running stage, as protocols.

stage.py implements them (StageContext, FileResult, Stage) and imports appends and merge; appends and
merge know the stage only through these protocols, so the package reads top-down with no cycle:
files/reader -> records, shortcuts, changes -> context -> appends, merge -> stage -> ladders, org,
users, history -> assets, checks, jobs, schedules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import psycopg


class Log(Protocol):
    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...


class FileOutcome(Protocol):
    """One file of a stage's result (stage.FileResult)."""

    name: str
    path: str                       # full, or appended
    appended_to: int | None
    file_rows: int | None
    counts: dict[str, int]


class Results(Protocol):
    entities: dict[str, dict[str, int]]


class Context(Protocol):
    """A stage running inside its transaction (stage.StageContext)."""

    conn: psycopg.Connection
    run_id: str | None
    log: Log
    rejects: Any                    # reader.RejectReport
    result: Results
    tails: dict[str, Any]           # file name -> appends.Tail

    def file_result(self, name: str) -> FileOutcome: ...

    def audit_source(self) -> str: ...


class StageSpec(Protocol):
    """What appends needs of a stage (stage.Stage)."""

    name: str
    append_guard: Callable[..., str | None] | None
