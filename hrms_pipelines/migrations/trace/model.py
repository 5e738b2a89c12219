"""What a trace records: per statement, the locks its session holds afterwards and what they block,
what was rewritten, scanned and created, how long it took; per run, where the schema came from and
where the time went. Rendered as text, JSON, markdown and a Dagster table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hrms_pipelines.metadata import markdown_table
from hrms_pipelines.migrations.trace import locks as lockmodes

# How the statement ran, as the runner runs it, and how the trace watched it.
IN_FILE_TRANSACTION = "file transaction"  # a transactional migration: one transaction for the whole file
IN_OWN_TRANSACTION = "BEGIN in the file"  # a non-transactional file that opens its own transaction
ALONE = "alone (autocommit)"  # a non-transactional file: each statement commits on its own
OUTSIDE_TRANSACTION = "outside a transaction"  # cannot run in one (CONCURRENTLY, VACUUM): watched by a probe


@dataclass
class HeldLock:
    relation: str
    kind: str  # table, index, partitioned table, ...
    mode: str  # as pg_locks names it: AccessExclusiveLock
    new: bool = True  # taken by this statement (else held since an earlier one of the same transaction)
    existing: bool = True  # the relation existed before the traced migration (else it created it)
    granted: bool = True  # False: the statement asked for it and waited (seen by the probe)
    rows: int | None = None  # the table's size on the scratch database (carried over from the target)

    @property
    def blocks(self) -> list[str]:
        return lockmodes.blocked(self.mode)

    def describe(self) -> str:
        state = "" if self.granted else " (requested)"
        origin = "" if self.existing else " (created here)"
        size = f" (~{self.rows:,} rows)" if self.rows else ""
        return f"{lockmodes.sql_name(self.mode)} on {self.relation}{size}{origin}{state}"


@dataclass
class StatementTrace:
    migration: str
    path: str
    line: int
    end_line: int
    sql: str
    transaction: str
    duration_ms: float = 0.0
    locks: list[HeldLock] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)  # existing relations with a new relfilenode
    scanned: list[str] | None = field(default_factory=list)  # existing tables read whole; None: not observable
    created_indexes: list[tuple[str, bool]] = field(default_factory=list)  # (name, valid)
    created_constraints: list[tuple[str, bool]] = field(default_factory=list)  # (name, validated)
    error: str | None = None

    def on_existing(self) -> list[HeldLock]:
        return [lock for lock in self.locks if lock.existing]

    def lock_lines(self, most: int = 6) -> list[str]:
        """The locks a reviewer reads: the strongest taken here on each existing relation, with what it
        blocks; those held since earlier statements of the transaction; a count of the rest."""
        def strongest_per_relation(held: list[HeldLock]) -> list[HeldLock]:
            best: dict[str, HeldLock] = {}
            for lock in held:
                if lock.relation not in best or lockmodes.strength(lock.mode) > lockmodes.strength(best[lock.relation].mode):
                    best[lock.relation] = lock
            return list(best.values())

        taken = strongest_per_relation([lock for lock in self.on_existing() if lock.new])
        out = [f"takes {lock.describe()}: {lockmodes.summary(lock.mode)}" for lock in taken[:most]]
        if len(taken) > most:
            out.append(f"takes locks on {len(taken) - most} more existing relation(s)")
        taken_as = {lock.relation: lockmodes.strength(lock.mode) for lock in taken}
        earlier = strongest_per_relation([lock for lock in self.on_existing()
                                          if not lock.new and lockmodes.strength(lock.mode) > taken_as.get(lock.relation, 0)])
        if earlier:
            shown = ", ".join(lock.describe() for lock in earlier[:most])
            more = f" and {len(earlier) - most} more" if len(earlier) > most else ""
            out.append(f"still holds {shown}{more} (taken by earlier statements of the transaction)")
        created = {lock.relation for lock in self.locks if not lock.existing}
        if created:
            out.append(f"locks {len(created)} object(s) the migration created")
        return out

    def strongest_existing(self) -> HeldLock | None:
        held = self.on_existing()
        return max(held, key=lambda lock: lockmodes.strength(lock.mode)) if held else None

    def blocking_summary(self) -> str:
        strongest = self.strongest_existing()
        if strongest is None:
            return "nothing on existing tables"
        return f"{lockmodes.summary(strongest.mode)} on {strongest.relation}"

    def work(self) -> list[str]:
        out = [f"rewrote {r}" for r in self.rewritten]
        out += [f"scanned {s}" for s in self.scanned or ()]
        out += [f"built index {name}{'' if valid else ' (INVALID)'}" for name, valid in self.created_indexes]
        out += [f"added constraint {name}{'' if ok else ' (NOT VALID)'}" for name, ok in self.created_constraints]
        return out

    def as_dict(self) -> dict:
        data = asdict(self)
        for lock, held in zip(data["locks"], self.locks, strict=True):
            lock["blocks"] = held.blocks
            lock["sql_mode"] = lockmodes.sql_name(held.mode)
        data["blocks"] = self.blocking_summary()
        return data


@dataclass
class TraceResult:
    source: str  # where the scratch database's schema came from
    statements: list[StatementTrace] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)  # rehearsed, in order
    not_reached: list[str] = field(default_factory=list)  # pending after a failure
    failure: str | None = None  # the runner's error on the scratch database
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went
    scratch_database: str = ""
    scratch_dropped: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def headline(self) -> str:
        return (f"trace: {len(self.migrations)} migration(s), {len(self.statements)} statement(s) rehearsed on a scratch "
                f"database ({self.source}) in {self.total_seconds:.2f} s; scratch database "
                f"{'dropped' if self.scratch_dropped else 'NOT dropped'}")

    def rows(self) -> list[list[str]]:
        out = []
        for s in self.statements:
            locks = "; ".join(s.lock_lines()) or "none"
            out.append([f"{s.path}:{s.line}", s.sql, s.transaction, locks, s.blocking_summary(),
                        ", ".join(s.work()) or "-", f"{s.duration_ms:.1f}", s.error or ""])
        return out

    HEADERS = ["statement", "sql", "transaction", "locks held afterwards", "blocks for other sessions",
               "rewrites, scans, creates", "ms", "error"]

    def to_text(self) -> str:
        lines = [self.headline()]
        for s in self.statements:
            lines.append(f"  {s.path}:{s.line}  {s.sql}")
            lines.append(f"      {s.transaction}, {s.duration_ms:.1f} ms")
            held = s.lock_lines()
            lines.extend(f"      {line}" for line in held)
            if not held:
                lines.append("      no lock on a table or index")
            if work := s.work():
                lines.append(f"      {'; '.join(work)}")
            if s.scanned is None:
                lines.append("      (whole-table reads are not observable outside a transaction)")
            if s.error:
                lines.append(f"      FAILED: {s.error}")
        if self.not_reached:
            lines.append(f"  not reached after the failure: {', '.join(self.not_reached)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items()))
        return "\n".join(lines)

    def to_markdown(self, limit: int | None = 200) -> str:
        if not self.statements:
            return self.headline()
        return self.headline() + "\n\n" + markdown_table(self.HEADERS, self.rows(), limit=limit)

    def as_dict(self) -> dict:
        return {
            "source": self.source, "migrations": self.migrations, "not_reached": self.not_reached,
            "failure": self.failure, "seconds": self.seconds, "scratch_database": self.scratch_database,
            "scratch_dropped": self.scratch_dropped, "notes": self.notes,
            "statements": [s.as_dict() for s in self.statements],
        }
