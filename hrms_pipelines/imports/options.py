"""The import's run config: the seed's flags, with the same meaning, in one block for the whole run.

    resources:
      hrms_import_options:
        config: {users_file: users-2026-11.csv, dry_run: true, force_update: false}

Where the files are read from, where backups, rejects and log files go, is deployment configuration
(HRMS_IMPORT_DIR, HRMS_BACKUP_DIR, HRMS_REJECTS_DIR, HRMS_LOGS_DIR), never run config: a run names
files only by plain names inside those folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from hrms_pipelines import settings
from hrms_pipelines.migrations import bounds

RESOURCE_KEY = "hrms_import_options"
FULL_BACKUP_CHOICES = ("ladders", "org", "users", "history", "all")
# A chunk is held in memory while it is validated: past 500,000 rows a launch could make the worker's
# memory grow with the file (issue 17: every numeric knob a UI user sets has a bound, named when refused).
CHUNK_ROWS_MIN, CHUNK_ROWS_MAX = 100, 500_000
DEFAULT_ORG_FILES = ["organizations.csv", "departments.csv", "tribes.csv", "chapters.csv", "teams.csv"]


class ImportOptions(dg.ConfigurableResource):
    """Options of an `hrms_import` run (the seed's command-line flags)."""

    ladders_file: str = Field(default="ladders.csv",
                              description="Ladders file: a plain name in the import folder (HRMS_IMPORT_DIR); empty skips the stage.")
    org_files: list[str] = Field(default_factory=lambda: list(DEFAULT_ORG_FILES),
                                 description="Organisation files in the import folder, each one's type detected from its columns.")
    users_file: str = Field(default="users.csv", description="Users file in the import folder; empty skips the stage.")
    history_file: str = Field(default="history.csv", description="History file in the import folder; empty skips the stage.")
    dry_run: bool = Field(default=False, description="Run every stage in one transaction and roll it back; no backup, no materialization.")
    backup: bool = Field(default=True, description="Take the full backups full_backup asks for (false: none). Change "
                                                   "capture for undo happens in every stage's transaction whatever this says.")
    full_backup: list[str] = Field(default_factory=list,
                                   description="Stages whose tables get a full backup (COPY of whole tables) before the stage "
                                               "writes: any of ladders, org, users, history, or all. Default none: each stage "
                                               "records exactly what it changes for undo (undo_import) in its own transaction.")
    validate_after: bool = Field(default=True, alias="validate",
                                 description="Run the stage's validations inside its transaction; a failing blocking one rolls it back.")
    force_update: bool = Field(default=False, description="Update existing ladders, org entities and users whose values differ.")
    create_users: bool = Field(default=False, description="Create unknown leaders referenced by email in org files as placeholder users.")
    ladders_only: bool = Field(default=False, description="Import only the ladder rows of the ladders file.")
    aspects_only: bool = Field(default=False, description="Import only the aspect rows of the ladders file.")
    levels_only: bool = Field(default=False, description="Import only the level rows of the ladders file.")
    skip_duplicates: bool = Field(default=True, description="History: leave existing events as they are (default).")
    update_existing: bool = Field(default=False, description="History: update existing events whose details differ.")
    log_file: str = Field(default="", description="Also write every operation to this file: a plain name in the "
                                                  "logs folder (HRMS_LOGS_DIR), 0600.")
    lock_timeout: str = Field(default="10s", description="How long a stage waits for a table lock before failing.")
    # 25,000: peak RSS 174 MiB instead of 291 MiB at 200k rows, no measurable CPU cost (bench/peers_bench.py --chunk-rows)
    chunk_rows: int = Field(default=25_000, ge=CHUNK_ROWS_MIN, le=CHUNK_ROWS_MAX,
                            description=f"Rows per validation chunk (memory stays flat): {CHUNK_ROWS_MIN:,} to {CHUNK_ROWS_MAX:,}.")

    @field_validator("lock_timeout")
    @classmethod
    def _bounded_lock_timeout(cls, value: str) -> str:
        bounds.LOCK_TIMEOUT.check(value)  # a UI user sets it: 0 would wait forever, holding the writers' pool
        return value

    @field_validator("full_backup")
    @classmethod
    def _known_stages(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in FULL_BACKUP_CHOICES]
        if unknown:
            raise ValueError(f"full_backup: unknown stage(s) {', '.join(map(settings.shown, unknown))}; "
                             f"choose from {', '.join(FULL_BACKUP_CHOICES)}")
        return value

    def wants_full_backup(self, stage: str) -> bool:
        return self.backup and (stage in self.full_backup or "all" in self.full_backup)

    def directory(self) -> Path:
        """The import folder: deployment configuration (HRMS_IMPORT_DIR), never run config."""
        return settings.import_dir()

    def file(self, name: str) -> Path:
        """`name` in the import folder; refused (UnsafeName) unless it is a plain file name."""
        return self.directory() / settings.plain_name(name, "import file")

    def names(self) -> list[str]:
        """Every file name the options select, checked: the first bad one is refused before anything runs."""
        names = [n for n in [self.ladders_file, *self.org_files, self.users_file, self.history_file] if n]
        for name in names:
            settings.plain_name(name, "import file")
        if self.log_file:
            settings.plain_name(self.log_file, "log_file")
        return names


def rejects_dir(run_id: str | None) -> Path:
    """Reject reports of a run: under the rejects folder (HRMS_REJECTS_DIR), 0700, never beside the backups."""
    run = "".join(c for c in (run_id or "adhoc") if c.isalnum() or c == "-")[:64] or "adhoc"
    return settings.rejects_dir() / run


def schedule_cron() -> str:
    return os.environ.get("HRMS_IMPORT_CRON", "0 2 * * *")


def schedule_timezone() -> str:
    return os.environ.get("HRMS_IMPORT_TIMEZONE", "Africa/Accra")
