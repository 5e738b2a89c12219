"""The backfill registry: what can be backfilled, with its description and its safe defaults.

A backfill is either
- a Python function decorated with `registry.backfill(...)`: it names the table, the SQL predicate
  of rows that still need the change, and gets each batch (its key range, inside the batch's
  transaction) to change set-based, usually through `batch.update("col = expr")`; or
- a declarative field backfill (`field.register(registry, ...)`, see field.py): table, column, value and a
  structured filter, checked against the live schema before it runs.

Either way the engine (engine.py) owns the batching: keyset on the primary key, one short
transaction per batch with its checkpoint, throttling, progress; and `batch.update` keeps the
previous values of every row it changes, so that any run can be undone (capture.py, undo.py). A
backfill only says *what* changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql

from hrms_pipelines import settings


class Recorder(Protocol):
    """What keeps the before-images of a batch's changes (capture.Capture); defined here so that the
    registry depends on nothing else of the package (registry <- capture, field <- engine <- undo, jobs)."""

    def update(self, batch: Batch, assignments: sql.Composable, values: dict[str, Any],
               declared: list[str] | tuple[str, ...] | None = None) -> int: ...


class BackfillError(Exception):
    """A problem the user has to act on; the message says which backfill and what to do."""


class UnknownBackfill(BackfillError):
    pass


@dataclass(frozen=True)
class Options:
    """How a backfill runs. Each backfill has its own defaults (safe for a UI launch, which
    cannot pass run config); run config overrides any of them for one run."""

    batch_size: int = 1000
    """Rows in the first batch; with `target_batch_ms` set it then adapts."""
    sleep_seconds: float = 0.1
    """Pause between batches, so other queries breathe."""
    target_batch_ms: int | None = 200
    """Adapt the batch size to keep each batch near this duration (None: fixed batch size)."""
    min_batch_size: int = 10
    max_batch_size: int = 50_000
    statement_timeout: str = "5s"
    """Per batch statement (SET LOCAL): a batch that runs long fails and is retried smaller."""
    lock_timeout: str = "1s"
    """Per batch: a batch that waits on a row lock this long is retried smaller."""
    max_retries: int = 5
    """Batches retried (each at half size) after a lock or statement timeout before failing."""
    max_active_backends: int | None = 16
    """Pause while more client backends than this are active in the database (None: off)."""
    max_lock_wait_ms: int | None = 1000
    """Pause while any session has waited longer than this for a lock (None: off)."""
    busy_pause_seconds: float = 1.0
    max_busy_wait_seconds: float = 600.0
    """Fail (checkpoint kept) when the database stays busy this long."""
    progress_every_seconds: float = 5.0
    max_batches: int | None = None
    """Stop after this many batches (the checkpoint keeps the place for the next launch)."""
    lock_wait: str = "5s"
    """How long to wait for another run of the same backfill to finish before failing."""
    max_runtime_seconds: float = 4 * 3600.0
    """Stop (status stopped, the checkpoint keeps the place) once a run has lasted this long, so that
    one run does not hold the writer pool for a day; the next launch resumes."""

    def override(self, **changes: Any) -> Options:
        """These options with every change that is not None applied."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        """Refuse a value past its bound (BOUNDS), naming the limit."""
        problems = []
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if value is None:
                continue
            number = _seconds(value, name) if name in DURATIONS else value
            if isinstance(number, str):
                problems.append(number)
            elif not low <= number <= high:
                unit = " s" if name in DURATIONS else ""
                problems.append(f"{name} must be between {_num(low)}{unit} and {_num(high)}{unit} (got {value})")
        if not problems and not self.min_batch_size <= self.max_batch_size:
            problems.append(f"need min_batch_size <= max_batch_size (got {self.min_batch_size}, {self.max_batch_size})")
        if problems:
            raise BackfillError("bad backfill options: " + "; ".join(problems))


BOUNDS: dict[str, tuple[float, float]] = {
    "batch_size": (1, 1_000_000), "sleep_seconds": (0, 60), "target_batch_ms": (1, 10_000),
    "min_batch_size": (1, 1_000_000), "max_batch_size": (1, 1_000_000),
    "statement_timeout": (0.001, 300), "lock_timeout": (0.001, 60), "max_retries": (0, 20),
    "max_active_backends": (0, 10_000), "max_lock_wait_ms": (0, 600_000), "busy_pause_seconds": (0.01, 60),
    "max_busy_wait_seconds": (0.1, 3600), "progress_every_seconds": (0.1, 3600), "max_batches": (1, 100_000_000),
    "lock_wait": (0, 600), "max_runtime_seconds": (1, 12 * 3600),
}
"""Every numeric knob's (lowest, highest) value: a run past one is refused at launch. The highest
keep one run from holding the writer pool (and its lock on the backfill) for longer than a night."""
DURATIONS = frozenset({"statement_timeout", "lock_timeout", "lock_wait"})
"""Knobs written as PostgreSQL durations ('5s', '500ms', '1min')."""
_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _seconds(value: str | int | float, name: str) -> float | str:
    """A PostgreSQL duration in seconds, or a sentence saying why it is not one."""
    if isinstance(value, (int, float)):
        return value / 1000  # PostgreSQL reads a bare number as milliseconds
    text = str(value).strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = text[len(number):].strip() or "ms"
    try:
        return float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        return f"{name} {value!r} is not a duration (e.g. '5s', '500ms', '1min')"


@dataclass
class Batch:
    """One batch: the key range [first_key, last_key] holding the next `size` rows that need the
    change, and the open transaction it runs in (as the import role)."""

    conn: psycopg.Connection
    plan: Plan
    first_key: int
    last_key: int
    size: int
    capture: Recorder | None = None
    """Records the before-image of every row `update` changes (capture.py); None: nothing recorded."""
    updated: int = 0
    """Rows changed through `update` in this batch."""
    steps: int = 0
    """Calls of `update` in this batch (each records its images as one step)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Added to the batch's audit row (counts, keys; never values of the rows)."""

    def update(self, assignments: str | sql.Composable, params: dict[str, Any] | None = None, *,
               columns: list[str] | tuple[str, ...] | None = None) -> int:
        """`UPDATE <table> SET <assignments>` on this batch's rows that still need the change.

        `assignments` is SQL written in code (never user input); values go in `params`
        (psycopg `%(name)s` placeholders). Returns the number of rows changed. The rows are picked
        by key range (an index range scan, cheaper than a list of keys) and the predicate again, so
        a row changed by someone else since the batch was chosen is left alone.

        The previous values of the columns it assigns (read from `assignments` by PostgreSQL's
        parser, or `columns` when given) are recorded for undo in the same statement. Change rows
        only through this method: SQL run on `batch.conn` directly is not recorded and cannot be
        undone.
        """
        if isinstance(assignments, str):
            assignments = sql.SQL(assignments)  # type: ignore[arg-type]  # code, not input
        values = {**self.plan.bind, **(params or {}), "_first_key": self.first_key, "_last_key": self.last_key}
        if self.capture is not None:
            changed = self.capture.update(self, assignments, values, columns)
        else:
            query = sql.SQL(
                "UPDATE {table} SET {assignments} WHERE {key} BETWEEN %(_first_key)s AND %(_last_key)s AND ({pending})"
            ).format(table=self.plan.table_sql, assignments=assignments, key=sql.Identifier(self.plan.key),
                     pending=self.plan.pending_sql)
            changed = self.conn.execute(query, values).rowcount
        self.updated += changed
        return changed


@dataclass
class Plan:
    """A backfill ready to run against one database: the table, the predicate, the change."""

    name: str
    table: str
    apply: Callable[[Batch], int]
    pending: sql.Composable | None = None
    """Rows that still need the change; None: every row (only the checkpoint guards re-runs)."""
    key: str = "id"
    params: dict[str, Any] = field(default_factory=dict)
    """What the checkpoint records about the change (shown in the UI)."""
    bind: dict[str, Any] = field(default_factory=dict)
    """Bound values the `pending` predicate refers to (`%(name)s`)."""
    scope: sql.Composable | None = None
    """A fixed filter of the rows the plan walks (unlike `pending`, it says nothing about what is
    left to do): the undo of one run walks that run's before-images."""
    undoable: bool = True
    """Record each run and the before-image of every row it changes (capture.py)."""
    action: str = "backfill"
    """The audit log's action for each batch."""
    changes_table: str | None = None
    """The table the plan changes when it walks another one (the undo walks a run's before-images):
    named in the audit rows and messages. Default: `table`."""
    changes_key: str | None = None
    """That table's key column (default: `key`)."""
    audit_source: str | None = None
    """The audit rows' source (default: backfill:<name>)."""
    unit: str = "rows"
    """What the plan walks, as its messages count it (the undo walks recorded batches)."""

    @property
    def table_sql(self) -> sql.Composable:
        return sql.Identifier(settings.HR_SCHEMA, self.table)

    @property
    def pending_sql(self) -> sql.Composable:
        return self.pending if self.pending is not None else sql.SQL("true")

    @property
    def where_sql(self) -> sql.Composable:
        """The rows a batch may pick: in scope and still pending."""
        if self.scope is None:
            return self.pending_sql
        return sql.SQL("({}) AND ({})").format(self.scope, self.pending_sql)

    @property
    def qualified_table(self) -> str:
        """The table the plan changes, schema-qualified."""
        return f"{settings.HR_SCHEMA}.{self.changes_table or self.table}"


@dataclass(frozen=True)
class Backfill:
    name: str
    description: str
    table: str
    defaults: Options
    prepare: Callable[[psycopg.Connection], Plan]
    """Build the plan against the live database (a field backfill validates its schema here)."""
    kind: str = "python"


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c == "_" for c in name) or not name[0].isalpha() or name != name.lower():
        raise ValueError(f"backfill name {name!r}: use lower_snake_case (it becomes a partition key)")


class BackfillRegistry:
    def __init__(self) -> None:
        self._backfills: dict[str, Backfill] = {}

    def add(self, backfill: Backfill) -> Backfill:
        _check_name(backfill.name)
        if backfill.name in self._backfills:
            raise ValueError(f"backfill {backfill.name!r} is registered twice")
        self._backfills[backfill.name] = backfill
        return backfill

    def backfill(
        self,
        name: str,
        *,
        table: str,
        description: str,
        pending: str | None,
        defaults: Options | None = None,
        key: str = "id",
    ) -> Callable[[Callable[[Batch], int]], Callable[[Batch], int]]:
        """Register a Python backfill.

        `table` is an HR table (schema hrms); `pending` is the SQL predicate of rows that still need
        the change (the engine only ever hands those to the function, and counts them as "left");
        None means every row, guarded only by the checkpoint. The function gets each `Batch` and
        returns how many rows it changed.
        """

        def register(function: Callable[[Batch], int]) -> Callable[[Batch], int]:
            predicate = sql.SQL(pending) if pending is not None else None  # type: ignore[arg-type]  # code, not input

            def prepare(conn: psycopg.Connection) -> Plan:
                return Plan(name=name, table=table, key=key, pending=predicate, apply=function,
                            params={"table": f"{settings.HR_SCHEMA}.{table}", "pending": pending or "every row"})

            self.add(Backfill(name=name, description=description, table=table,
                              defaults=defaults or Options(), prepare=prepare, kind="python"))
            return function

        return register

    def get(self, name: str) -> Backfill:
        try:
            return self._backfills[name]
        except KeyError:
            known = ", ".join(sorted(self._backfills)) or "none"
            raise UnknownBackfill(f"unknown backfill {settings.shown(name)}; registered backfills: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._backfills)

    def __iter__(self) -> Iterator[Backfill]:
        return iter(self._backfills[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._backfills)


# The registry of the code location; builtin.py fills it.
registry = BackfillRegistry()
