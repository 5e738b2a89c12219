"""Test harness: one embedded PostgreSQL for the whole run, a template database with every migration
applied, and a fresh copy of it (CREATE DATABASE ... TEMPLATE, ~0.1 s) for each test that wants one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hrms_pipelines import embedded, resources, settings
from hrms_pipelines.migrations import files, runner
from hrms_pipelines.resources import HrmsDatabase

TEST_PGDATA = settings.PROJECT_ROOT / ".hrms" / "test-pgdata"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """Superuser URL of the test server's `postgres` database."""
    return embedded.server(TEST_PGDATA).get_uri()


def _url(admin_url: str, database: str) -> str:
    return admin_url.replace("/postgres?", f"/{database}?", 1)


def create_database(admin_url: str, *, template: str | None = None, prefix: str = "test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return name


def drop_database(admin_url: str, name: str) -> None:
    url = _url(admin_url, name)
    engine = resources._ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def migrations() -> list[files.Migration]:
    return files.discover(settings.migrations_dir())


@pytest.fixture(scope="session")
def migrated_template(pg_admin_url: str, migrations) -> Iterator[str]:
    name = create_database(pg_admin_url, prefix="template")
    with psycopg.connect(_url(pg_admin_url, name)) as conn:
        runner.apply(conn, migrations, log=lambda *_: None)
    yield name
    drop_database(pg_admin_url, name)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A new database with nothing in it."""
    name = create_database(pg_admin_url)
    yield _url(pg_admin_url, name)
    drop_database(pg_admin_url, name)


@pytest.fixture
def database_url(pg_admin_url: str, migrated_template: str) -> Iterator[str]:
    """A new database with every migration applied."""
    name = create_database(pg_admin_url, template=migrated_template)
    yield _url(pg_admin_url, name)
    drop_database(pg_admin_url, name)


@pytest.fixture
def hrms_db(database_url: str) -> HrmsDatabase:
    return HrmsDatabase(url=database_url)


@pytest.fixture(scope="session")
def dagster_storage_url(pg_admin_url: str) -> Iterator[str]:
    """A database on the test server for Dagster's own storage (never the developer's .hrms)."""
    name = create_database(pg_admin_url, prefix="dagster")
    socket_dir = embedded.server(TEST_PGDATA).get_postmaster_info().socket_dir
    yield f"postgresql+psycopg2://postgres:@/{name}?host={socket_dir}"
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def cli_base_env(dagster_storage_url: str) -> dict[str, str]:
    """Environment for a `dagster` CLI subprocess: test storage, no DAGSTER_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", settings.DATABASE_URL_ENV)}
    env[settings.DAGSTER_PG_URL_ENV] = dagster_storage_url
    return env


@pytest.fixture
def subprocess_env(database_url: str, cli_base_env: dict[str, str]) -> dict[str, str]:
    """Environment for a `dagster job execute` subprocess against the test database."""
    return dict(cli_base_env, **{settings.DATABASE_URL_ENV: database_url})


@pytest.fixture
def project_root() -> Path:
    return settings.PROJECT_ROOT
