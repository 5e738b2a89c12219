"""Scratch databases for the benchmarks, on the embedded PostgreSQL under .hrms/ (or the server of
HRMS_BENCH_ADMIN_URL): created by its administrator, the duty roles bootstrapped, migrated by the
migrator role, dropped afterwards. The code under test reaches them as each duty's role
(PinnedDatabase); the benchmarks' own baselines (raw COPY, a single UPDATE) run as the administrator."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrms_pipelines import embedded, roles, settings  # noqa: E402
from hrms_pipelines.migrations import files, runner  # noqa: E402

ADMIN_URL_ENV = "HRMS_BENCH_ADMIN_URL"


def admin_url() -> str:
    """An administrator's URL of the server the benchmarks use (its `postgres` database)."""
    return os.environ.get(ADMIN_URL_ENV) or embedded.server().get_uri()


def admin_connection(url: str) -> psycopg.Connection:
    """The administrator's autocommit session, its search_path pinned (roles.pin_search_path)."""
    conn = psycopg.connect(url, autocommit=True)
    roles.pin_search_path(conn)
    return conn


def url_of(base: str, name: str) -> str:
    """`base` (a libpq URL) with another database name."""
    return sa.make_url(base).set(database=name).render_as_string(hide_password=False)


def create(prefix: str, *, template: str | None = None, admin: str | None = None) -> tuple[str, str]:
    """(name, administrator URL) of a new database, a copy of `template` when given, roles bootstrapped."""
    admin = admin or admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin_connection(admin) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
        conn.execute(query)
    url = url_of(admin, name)
    with admin_connection(url) as conn:
        roles.bootstrap(conn, name)
    return name, url


def migrate(url: str) -> None:
    """Every migration applied, as the migrator role."""
    with psycopg.connect(roles.with_user(url, roles.MIGRATOR.role)) as conn:
        runner.apply(conn, files.discover(settings.migrations_dir()), log=lambda *_: None)


def drop(name: str, *, admin: str | None = None) -> None:
    with admin_connection(admin or admin_url()) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
