"""The analyzer's vocabulary: severities, rules, findings, and the statement a rule looks at."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


class Severity(str, enum.Enum):
    DANGER = "DANGER"
    WARNING = "WARNING"


@dataclass(frozen=True)
class Hit:
    """What a rule's check yields: where (byte offset into the file) and, optionally, a sharper
    message and severity than the rule's defaults."""

    location: int
    detail: str = ""
    severity: Severity | None = None


@dataclass(frozen=True)
class Prediction:
    """What a lock rule claims PostgreSQL does with the statement it flags, for trace mode to check:
    the weakest lock it takes on an existing table (pg_locks' name, e.g. "AccessExclusiveLock") and
    the work it does under it: "rewrite" (a new relfilenode), "scan" (reads every row), "build" (an
    index built from every row), or None (a catalogue change)."""

    lock: str
    work: str | None = None


@dataclass(frozen=True)
class Rule:
    """One lint rule: its stable id, default severity, why the SQL is dangerous, the safe
    alternative, and a bad and a good example (each a whole migration file run by the runner)."""

    id: str
    severity: Severity
    why: str
    fix: str
    bad: str
    good: str
    # Statement node types the check wants ("AlterTableStmt", ...); empty = engine-level rule.
    node_types: tuple[str, ...] = ()
    check: Callable[[Statement, FileState], Iterable[Hit]] | None = None
    # Rules about losing data or breaking running code do not apply to down files: undoing the
    # up migration is what a down file is for.
    in_down_files: bool = False
    squawk: str | None = None  # the squawk rule this one matches, when there is one
    # A privilege escalation: the file under review cannot allow it with `-- hrms:allow` (the attempt is
    # itself reported), and the rule also looks inside DO blocks and function bodies.
    escalation: bool = False
    predicts: Prediction | None = None  # lock rules: what trace mode should observe
    found_by_trace: bool = False  # reported by trace mode (a rehearsal on a real PostgreSQL), not by parsing


@dataclass
class Finding:
    path: str
    line: int
    column: int
    rule: str
    severity: Severity
    message: str
    fix: str
    statement: str = ""
    suppressed: str | None = None  # the reason, when an `-- hrms:allow` comment suppresses it
    migration: str = ""  # label of the migration the file belongs to ("payroll/0002_name"), if any
    offset: int | None = field(default=None, repr=False, compare=False)  # byte offset; None: the whole file
    # trace mode: {"status": confirmed | harmless | mismatch | not traced, "observed": what the trace saw}
    trace: dict | None = None

    def fails(self, strict: bool) -> bool:
        return self.suppressed is None and (self.severity is Severity.DANGER or strict)

    def as_dict(self) -> dict:
        return {
            "path": self.path, "line": self.line, "column": self.column, "rule": self.rule,
            "severity": self.severity.value, "message": self.message, "fix": self.fix,
            "statement": self.statement, "suppressed": self.suppressed, "migration": self.migration,
            **({"trace": self.trace} if self.trace is not None else {}),
        }


@dataclass
class Statement:
    """A parsed statement: its node type and body (pglast's JSON form), its byte span."""

    kind: str
    node: dict
    start: int
    end: int
    inner: list | None = None  # DO blocks and functions: the statements in their body (rules._plpgsql.Inner)


@dataclass
class FileState:
    """What the engine knows while it walks a file: transaction and timeout state, which tables
    are new (created in this file or by a pending migration), their sizes, and what earlier
    migrations left behind."""

    sizes: object  # sizes.TableSizes
    new_tables: set[str]
    catalog: object  # engine.Catalog
    in_transaction: bool
    lock_timeout: bool
    statement_timeout: bool
    runner_transaction: bool  # the runner wraps the whole file in one transaction
    # constraints added NOT VALID in the current transaction: (table, name)
    not_valid_in_transaction: set[tuple[str, str]] = field(default_factory=set)
    # tables with a VALIDATE CONSTRAINT in this file whose ADD is not in this file (squawk's
    # cross-migration pattern for SET NOT NULL)
    validated_elsewhere: set[str] = field(default_factory=set)
    indexes_created_here: set[str] = field(default_factory=set)
    # CHECK (col IS NOT NULL) constraints: added NOT VALID in this file (name -> column), and
    # validated in this file
    pending_not_null: dict[tuple[str, str], str] = field(default_factory=dict)
    validated_here: set[tuple[str, str]] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)  # report-once rules already reported
    # prefer-robust-stmts: constraint names dropped (IF EXISTS) in this file, and whether re-added since
    dropped_constraints: dict[str, bool] = field(default_factory=dict)
    down: bool = False  # a down file: it undoes what its up file made (a trigger it created, a grant it revoked)

    def is_new(self, table: str) -> bool:
        return table in self.new_tables or table.rsplit(".", 1)[-1] in self.new_tables

    def tier(self, *tables: str) -> Severity | None:
        """None when every table is new (nothing to lock, nothing to rewrite); DANGER when one
        of them is large; WARNING otherwise (an existing table of unknown or modest size)."""
        existing = [t for t in tables if t and not self.is_new(t)]
        if not existing:
            return None
        return Severity.DANGER if any(self.sizes.is_large(t) for t in existing) else Severity.WARNING

    def size_note(self, table: str) -> str:
        rows = self.sizes.rows(table)
        if rows is None:
            return f"{table} (size unknown)"
        return f"{table} (~{rows:,} rows{', large' if self.sizes.is_large(table) else ''})"
