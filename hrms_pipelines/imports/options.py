"""The import's run config: the seed's flags, with the same meaning, in one block for the whole run.

    resources:
      hrms_import_options:
        config: {import_dir: /data/incoming, dry_run: true, force_update: false}
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from hrms_pipelines import settings

RESOURCE_KEY = "hrms_import_options"
DEFAULT_ORG_FILES = ["organizations.csv", "departments.csv", "tribes.csv", "chapters.csv", "teams.csv"]


class ImportOptions(dg.ConfigurableResource):
    """Options of an `hrms_import` run (the seed's command-line flags)."""

    import_dir: str = Field(default="", description="Folder of the CSV files; default HRMS_IMPORT_DIR, else seeds/sample.")
    ladders_file: str = Field(default="ladders.csv", description="Ladders file in import_dir; empty skips the stage.")
    org_files: list[str] = Field(default_factory=lambda: list(DEFAULT_ORG_FILES),
                                 description="Organisation files in import_dir, each one's type detected from its columns.")
    users_file: str = Field(default="users.csv", description="Users file in import_dir; empty skips the stage.")
    history_file: str = Field(default="history.csv", description="History file in import_dir; empty skips the stage.")
    dry_run: bool = Field(default=False, description="Run every stage in one transaction and roll it back; no backup, no materialization.")
    backup: bool = Field(default=True, description="Back up the tables of each stage before it writes.")
    validate_after: bool = Field(default=True, alias="validate",
                                 description="Run the stage's validations inside its transaction; a failing blocking one rolls it back.")
    force_update: bool = Field(default=False, description="Update existing ladders, org entities and users whose values differ.")
    create_users: bool = Field(default=False, description="Create unknown leaders referenced by email in org files as placeholder users.")
    ladders_only: bool = Field(default=False, description="Import only the ladder rows of the ladders file.")
    aspects_only: bool = Field(default=False, description="Import only the aspect rows of the ladders file.")
    levels_only: bool = Field(default=False, description="Import only the level rows of the ladders file.")
    skip_duplicates: bool = Field(default=True, description="History: leave existing events as they are (default).")
    update_existing: bool = Field(default=False, description="History: update existing events whose details differ.")
    log_file: str = Field(default="", description="Also write every operation to this file.")
    backup_dir: str = Field(default="", description="Where backups go; default HRMS_BACKUP_DIR, else .hrms/backups.")
    lock_timeout: str = Field(default="10s", description="How long a stage waits for a table lock before failing.")
    chunk_rows: int = Field(default=100_000, description="Rows per validation chunk (memory stays flat).")

    def directory(self) -> Path:
        return Path(self.import_dir).expanduser().resolve() if self.import_dir else settings.import_dir()

    def backup_root(self) -> Path:
        return Path(self.backup_dir).expanduser().resolve() if self.backup_dir else settings.backup_dir()

    def file(self, name: str) -> Path:
        return self.directory() / name


def rejects_dir(run_id: str | None) -> Path:
    """Reject reports of a run: under HRMS_HOME (never beside the backups)."""
    return settings.hrms_home() / "runs" / (run_id or "adhoc") / "rejects"


def schedule_cron() -> str:
    return os.environ.get("HRMS_IMPORT_CRON", "0 2 * * *")


def schedule_timezone() -> str:
    return os.environ.get("HRMS_IMPORT_TIMEZONE", "Africa/Accra")
