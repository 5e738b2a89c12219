"""Where things live, and the environment variables that move them.

Every path has a default inside the project (so a fresh clone works) and an environment variable
that a deployment sets instead.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _project_root() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    candidate = PACKAGE_DIR.parent
    if (candidate / "sql" / "migrations").is_dir():
        return candidate
    return Path.cwd()


PROJECT_ROOT = _project_root()

# Environment variable names, in one place.
DATABASE_URL_ENV = "HRMS_DATABASE_URL"
DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"
HOME_ENV = "HRMS_HOME"
MIGRATIONS_DIR_ENV = "HRMS_MIGRATIONS_DIR"
IMPORT_DIR_ENV = "HRMS_IMPORT_DIR"
BACKUP_DIR_ENV = "HRMS_BACKUP_DIR"
ENVIRONMENT_ENV = "HRMS_ENV"
IMPORT_CREATE_USERS_ENV = "HRMS_IMPORT_CREATE_USERS"

# The PostgreSQL schema that holds every HR table, and the one that holds the migration ledger.
HR_SCHEMA = "hrms"
META_SCHEMA = "hrms_meta"
# The role imports run as: SELECT, INSERT, UPDATE on the HR tables, never DELETE or TRUNCATE.
IMPORT_ROLE = "hrms_importer"


def hrms_home() -> Path:
    """Local state: the embedded PostgreSQL's data, default backups. Git-ignored."""
    return Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".hrms").resolve()


def migrations_dir() -> Path:
    return Path(os.environ.get(MIGRATIONS_DIR_ENV) or PROJECT_ROOT / "sql" / "migrations").resolve()


def import_dir() -> Path:
    return Path(os.environ.get(IMPORT_DIR_ENV) or PROJECT_ROOT / "seeds" / "sample").resolve()


def backup_dir() -> Path:
    return Path(os.environ.get(BACKUP_DIR_ENV) or hrms_home() / "backups").resolve()


def environment() -> str:
    """The deployment's environment: development, staging or production."""
    return (os.environ.get(ENVIRONMENT_ENV) or "development").strip().lower()

# Every op or asset that writes to the HR database is in this Dagster concurrency pool; dagster.yaml
# limits it to one run at a time, so a second writer waits in the queue instead of failing.
WRITER_POOL = "hrms_writer"
