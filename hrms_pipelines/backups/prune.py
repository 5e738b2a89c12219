"""Retention: which backups to remove, decided by the deployment, never by run config.

| variable                  | default | meaning                                                   |
|---------------------------|---------|-----------------------------------------------------------|
| HRMS_BACKUP_KEEP_NEWEST   | 7       | keep the N newest backups of each group (at least 1)      |
| HRMS_BACKUP_KEEP_DAYS     | 30      | keep every backup younger than D days                     |

A group is an import stage's backups (label `import_users` …), the snapshots, the pre-restore
backups, or any other label. A backup is removed only when it is none of: the newest of its group,
among the N newest of its group, younger than D days. One a restore is reading (its folder lock is
held) is never removed, nor a folder this service cannot vouch for (unsigned, foreign key, not
owned by the service: reported and left alone). Pruning also settles what killed writers left
(catalog.settle_pending). A dry run removes and settles nothing and lists what it would remove.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from hrms_pipelines.backups import catalog, fs
from hrms_pipelines.backups.manifest import BackupError, BackupManifest, retention_group
from hrms_pipelines.metadata import markdown_table

KEEP_NEWEST_ENV = "HRMS_BACKUP_KEEP_NEWEST"
KEEP_DAYS_ENV = "HRMS_BACKUP_KEEP_DAYS"
DEFAULT_KEEP_NEWEST = 7
DEFAULT_KEEP_DAYS = 30


def _whole_number(env: str, default: int, minimum: int) -> int:
    raw = (os.environ.get(env) or str(default)).strip()
    if not raw.isdigit() or int(raw) < minimum:
        raise BackupError(f"{env}={raw!r}: expected a whole number of at least {minimum} (default {default})")
    return int(raw)


@dataclass(frozen=True)
class Retention:
    keep_newest: int = DEFAULT_KEEP_NEWEST
    keep_days: int = DEFAULT_KEEP_DAYS

    @classmethod
    def from_environment(cls) -> Retention:
        return cls(keep_newest=_whole_number(KEEP_NEWEST_ENV, DEFAULT_KEEP_NEWEST, 1),
                   keep_days=_whole_number(KEEP_DAYS_ENV, DEFAULT_KEEP_DAYS, 0))

    def describe(self) -> str:
        return (f"keep the {self.keep_newest} newest of each group ({KEEP_NEWEST_ENV}) and everything younger than "
                f"{self.keep_days} days ({KEEP_DAYS_ENV})")


@dataclass(frozen=True)
class Decision:
    manifest: BackupManifest
    action: str  # "removed", "would remove", "kept"
    why: str

    def row(self) -> list[Any]:
        m = self.manifest
        return [m.backup_id, m.label, f"{m.created_at:%Y-%m-%d %H:%M:%S}", ", ".join(t.table for t in m.tables),
                m.total_bytes, self.action, self.why]

    def sentence(self) -> str:
        m = self.manifest
        return (f"{self.action} backup {m.backup_id} ({m.label!r}, taken {m.created_at:%Y-%m-%d %H:%M:%S} UTC, tables "
                f"{', '.join(t.table for t in m.tables)}, {m.total_bytes:,} bytes): {self.why}")


@dataclass
class PruneResult:
    retention: Retention
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    settled: list[catalog.Settled] = field(default_factory=list)
    left_alone: list[catalog.Entry] = field(default_factory=list)

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if d.action in ("removed", "would remove")]

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "kept"]

    def table_markdown(self) -> str:
        return markdown_table(["backup", "label", "created (UTC)", "tables", "bytes", "action", "why"],
                              [d.row() for d in self.decisions])

    def to_metadata(self) -> dict[str, Any]:
        return {
            "dry_run": dg.MetadataValue.bool(self.dry_run),
            "retention": dg.MetadataValue.text(self.retention.describe()),
            "backups": dg.MetadataValue.md(self.table_markdown()),
            "removed" if not self.dry_run else "would_remove": dg.MetadataValue.int(len(self.removed)),
            "bytes_freed" if not self.dry_run else "bytes_would_free":
                dg.MetadataValue.int(sum(d.manifest.total_bytes for d in self.removed)),
            "kept": dg.MetadataValue.int(len(self.kept)),
            "settled_pending": dg.MetadataValue.md(markdown_table(
                ["folder", "action", "why"], [[s.name, s.action, s.why] for s in self.settled])),
            "left_alone": dg.MetadataValue.md(markdown_table(
                ["folder", "why"], [[e.directory.name, e.problem] for e in self.left_alone])),
        }


def _plan(manifests: list[BackupManifest], retention: Retention, now: datetime) -> list[tuple[BackupManifest, str | None]]:
    """(manifest, why it is kept) or (manifest, None) for each backup, newest first within groups."""
    groups: dict[str, list[BackupManifest]] = {}
    for m in sorted(manifests, key=lambda m: (m.created_at, m.backup_id), reverse=True):
        groups.setdefault(retention_group(m.label), []).append(m)
    plan = []
    horizon = now - timedelta(days=retention.keep_days)
    for group, members in groups.items():
        for rank, m in enumerate(members):
            if rank == 0:
                why = f"the newest of {group!r}"
            elif rank < retention.keep_newest:
                why = f"one of the {retention.keep_newest} newest of {group!r}"
            elif m.created_at > horizon:
                why = f"younger than {retention.keep_days} days"
            else:
                why = None
            plan.append((m, why))
    return plan


def prune_backups(
    conn: psycopg.Connection | None,
    *,
    retention: Retention | None = None,
    dry_run: bool = False,
    backup_root: Path | str | None = None,
    now: datetime | None = None,
    log: Callable[[str], None] | None = None,
) -> PruneResult:
    """Apply the retention to the backup root (see the module). `conn` (the reader role) lets pending
    pre-restore backups be settled from the audit log."""
    say = log or (lambda message: None)
    retention = retention or Retention.from_environment()
    root = catalog.root_of(backup_root)
    now = now or datetime.now(UTC)
    result = PruneResult(retention, dry_run)
    if not fs.exists(root):
        return result
    fs.check_trusted_dir(root, "the backup root")
    if dry_run:
        result.settled = [catalog.Settled(p.name, "would settle", "unpublished folder left by a writer")
                          for p in fs.pending_dirs(root)]
    else:
        result.settled = catalog.settle_pending(conn, root, log=say)
    entries = catalog.scan(root)
    result.left_alone = [e for e in entries if e.manifest is None]
    for entry in result.left_alone:
        say(f"left alone {entry.directory.name}: {entry.problem}")
    for manifest, kept_because in _plan([e.manifest for e in entries if e.manifest is not None], retention, now):
        if kept_because is not None:
            result.decisions.append(Decision(manifest, "kept", kept_because))
            continue
        fd = fs.try_lock(manifest.directory)
        if fd is None:
            decision = Decision(manifest, "kept", "in use: a restore is reading it")
        elif dry_run:
            os.close(fd)
            decision = Decision(manifest, "would remove", f"older than {retention.keep_days} days and not among the "
                                                          f"{retention.keep_newest} newest of its group")
        else:
            fs.remove_locked(manifest.directory, fd)
            decision = Decision(manifest, "removed", f"older than {retention.keep_days} days and not among the "
                                                     f"{retention.keep_newest} newest of its group")
        result.decisions.append(decision)
        if decision.action != "kept" or fd is None:
            say(decision.sentence())
    return result
