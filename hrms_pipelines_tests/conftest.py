"""Test harness: one embedded PostgreSQL for the whole run, the duty roles bootstrapped on it, a
template database with every migration applied by the migrator role, and a fresh copy of it (CREATE
DATABASE ... TEMPLATE, ~0.1 s) for each test that wants one.

`database_url` is the superuser's URL of the test database, for the tests' own assertions; the code
under test reaches it through `hrms_db` (a PinnedDatabase), whose every duty logs in as its own role."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hrms_pipelines import embedded, resources, roles, settings
from hrms_pipelines.migrations import files, runner
from hrms_pipelines.migrations.trace.cluster import TRACE_PGDATA_ENV
from hrms_pipelines.resources import PinnedDatabase

# `make test` runs the suite on several pytest-xdist workers: each has its own embedded servers (they
# listen only on a socket inside their data folder, so they never collide); a plain `pytest` run is "".
WORKER = f"-{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else ""
TEST_PGDATA = settings.PROJECT_ROOT / ".hrms" / f"test-pgdata{WORKER}"
# Trace mode's private scratch cluster, shared by every test of the worker and every process a test
# starts (its schema templates are reused); the variable is the deployment's HRMS_TRACE_PGDATA.
TRACE_PGDATA = settings.PROJECT_ROOT / ".hrms" / f"test-trace-pgdata{WORKER}"


@pytest.fixture(autouse=True)
def deployment_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """This test's deployment configuration: every configured folder under its tmp_path (never the
    developer's .hrms), as environment variables, the way a deployment sets them."""
    home = tmp_path / "hrms_home"
    dirs = {"home": home, "backups": home / "backups", "logs": home / "logs", "rejects": home / "rejects",
            "keys": home / "keys"}
    for env, key in ((settings.HOME_ENV, "home"), (settings.BACKUP_DIR_ENV, "backups"), (settings.LOGS_DIR_ENV, "logs"),
                     (settings.REJECTS_DIR_ENV, "rejects"), (settings.KEYS_DIR_ENV, "keys")):
        monkeypatch.setenv(env, str(dirs[key]))
    for duty in roles.Duty:
        monkeypatch.delenv(duty.url_env, raising=False)
    monkeypatch.setenv(TRACE_PGDATA_ENV, str(TRACE_PGDATA))
    return dirs


@pytest.fixture
def import_dir(monkeypatch: pytest.MonkeyPatch):
    """`import_dir(path)` makes `path` the deployment's import folder (HRMS_IMPORT_DIR) for this test."""
    def use(path: Path) -> Path:
        monkeypatch.setenv(settings.IMPORT_DIR_ENV, str(path))
        return path
    return use


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """Superuser URL of the test server's `postgres` database."""
    return embedded.server(TEST_PGDATA).get_uri()


def _url(admin_url: str, database: str) -> str:
    return admin_url.replace("/postgres?", f"/{database}?", 1)


def as_role(url: str, duty: roles.Duty) -> str:
    """`url` logged in as `duty`'s role."""
    return roles.with_user(url, duty.role)


def create_database(admin_url: str, *, template: str | None = None, prefix: str = "test") -> str:
    """A new database (a copy of `template`), the duty roles bootstrapped for it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with embedded.admin_connection(admin_url) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    with embedded.admin_connection(admin_url, name) as conn:
        roles.bootstrap(conn, name)
    return name


def migrate(url: str, migration_list) -> None:
    """Every migration applied to the database at `url`, as the migrator."""
    with psycopg.connect(as_role(url, roles.MIGRATOR)) as conn:
        runner.apply(conn, migration_list, log=lambda *_: None)


def drop_database(admin_url: str, name: str) -> None:
    resources.dispose_engines(name)
    with embedded.admin_connection(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def project_copy(root: Path) -> Path:
    """The project's migration files (up and down), copied byte for byte under `root`: a migrations
    folder a test adds its own migrations to."""
    for m in files.discover(settings.migrations_dir()):
        for f in (m.up, m.down):
            if f is not None:
                (root / m.app).mkdir(parents=True, exist_ok=True)
                (root / m.app / f.path.name).write_bytes(f.data)
    return root


@pytest.fixture(scope="session")
def migrations() -> list[files.Migration]:
    return files.discover(settings.migrations_dir())


@pytest.fixture(scope="session")
def migrated_template(pg_admin_url: str, migrations) -> Iterator[str]:
    name = create_database(pg_admin_url, prefix="template")
    migrate(_url(pg_admin_url, name), migrations)
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
def hrms_db(database_url: str) -> PinnedDatabase:
    """The code's way in: every duty at the test database, each as its own role."""
    return PinnedDatabase(location=database_url)


def create_dagster_storage(admin_url: str, prefix: str = "dagster") -> tuple[str, str]:
    """(name, dagster-postgres URL) of a new database for Dagster's own storage, owned by its own role
    (as the embedded server's), on the test server."""
    name = create_database(admin_url, prefix=prefix)
    socket_dir = embedded.server(TEST_PGDATA).get_postmaster_info().socket_dir
    role = sql.Identifier(embedded.DAGSTER_ROLE)
    with embedded.admin_connection(admin_url) as conn:
        conn.execute(sql.SQL("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) {r}) THEN "
                             "CREATE ROLE {i} LOGIN; END IF; END $$").format(r=sql.Literal(embedded.DAGSTER_ROLE), i=role))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), role))
    with embedded.admin_connection(admin_url, name) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role))
    return name, f"postgresql+psycopg2://{embedded.DAGSTER_ROLE}:@/{name}?host={socket_dir}"


@pytest.fixture(scope="session")
def dagster_storage_url(pg_admin_url: str) -> Iterator[str]:
    """A database on the test server for Dagster's own storage (never the developer's .hrms)."""
    name, url = create_dagster_storage(pg_admin_url)
    yield url
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


SECOND_PGDATA = settings.PROJECT_ROOT / ".hrms" / f"test-second-pgdata{WORKER}"


@pytest.fixture(scope="session")
def second_server():
    """A second embedded PostgreSQL (hrms_pipelines_tests.servers): a user's own database server, and
    one a test may crash and restart."""
    from hrms_pipelines_tests.servers import SecondServer

    return SecondServer(SECOND_PGDATA)


# The one `dagster dev` the GraphQL suites share (booted once per session; see shared_ui.py).
from hrms_pipelines_tests.shared_ui import alert_capture, hostile_deployment, shared_webserver  # noqa: E402,F401


# Under pytest-xdist (`make test`, --dist loadgroup) the tests that share one booted `dagster dev` run
# on one worker (each server boots once per suite, not once per worker), and in their file's order: the
# GraphQL suites' modules carry `pytestmark = pytest.mark.xdist_group("webserver")`, the browser
# suite's `xdist_group("browser")`.
_SHARED_SERVER_GROUPS = {"shared_webserver": "webserver", "dagster_ui": "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test on a shared server without its group's mark would boot a second server on another worker
    (and miss what the earlier tests of its file left there): refuse to run rather than be slow or flaky."""
    for item in items:
        for fixture, group in _SHARED_SERVER_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()) and group not in {
                    (m.args or (m.kwargs.get("name"),))[0] for m in item.iter_markers("xdist_group")}:
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: its module needs "
                                        f"pytestmark = pytest.mark.xdist_group({group!r})")
