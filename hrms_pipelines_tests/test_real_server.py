"""The deployment path on a server reached the way a user's is (marker `pg15`): a private cluster of
Debian's PostgreSQL 15 (what the distribution ships) over TCP with scram-sha-256 passwords, whose only
administrator the product meets is not a superuser (CREATEROLE, CREATEDB: what RDS, Cloud SQL and
Azure give). `roles sql` is also run on a private cluster of the bundled PostgreSQL 18 (16+ changed
what CREATEROLE may do). Skips with one line when Debian's binaries are absent (apt-get install
postgresql-15; .ci/run does)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import sql

from hrms_pipelines import roles

from .private_cluster import ADMIN, DEBIAN_PG15_BIN, SUPERUSER, PrivateCluster, embedded_bin

pytestmark = pytest.mark.pg15

NO_PG15 = f"Debian's PostgreSQL 15 is not installed ({DEBIAN_PG15_BIN}/postgres): apt-get install postgresql-15"


def _cluster(bindir):
    cluster = PrivateCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def pg15():
    if not (DEBIAN_PG15_BIN / "postgres").exists():
        pytest.skip(NO_PG15)
    yield from _cluster(DEBIAN_PG15_BIN)


@pytest.fixture(scope="module")
def pg18():
    yield from _cluster(embedded_bin())


@pytest.fixture(params=["pg15", "pg18"])
def server(request) -> PrivateCluster:
    return request.getfixturevalue(request.param)


def roles_sql(database: str) -> str:
    result = subprocess.run([sys.executable, "-m", "hrms_pipelines.roles", "sql", "--database", database],
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def set_password(cluster: PrivateCluster, duty: roles.Duty, database: str) -> str:
    """What psql's \\password does: the verifier computed on the client (scram-sha-256), sent in
    ALTER ROLE; the password itself never reaches the server or its log."""
    password = uuid.uuid4().hex
    with cluster.connect(ADMIN, database) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), duty.role.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(duty.role), sql.Literal(verifier)))
    cluster.passwords[duty.role] = password
    return password


def test_roles_sql_works_for_a_managed_service_administrator(server):
    database = f"hrms_{uuid.uuid4().hex[:8]}"
    with server.connect(ADMIN, "postgres") as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone() \
            == (False, True, True)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    text = roles_sql(database)
    for attempt in ("first", "again"):           # idempotent: an administrator may run it twice
        done = server.psql(ADMIN, database, "-f", "-", input=text)
        assert done.returncode == 0, f"{attempt} ({server.version}): {done.stderr}"
    with server.connect(SUPERUSER, database) as conn:
        attributes = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, rolinherit "
            "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", [list(roles.ALL_ROLES)]).fetchall()
        assert attributes == [(r, False, False, False, False, False, True, True) for r in sorted(roles.ALL_ROLES)]
        conn.execute("ALTER ROLE hrms_importer CREATEDB NOLOGIN")   # an attribute a duty must not have, fixed by a re-run
    done = server.psql(ADMIN, database, "-f", "-", input=text)
    assert done.returncode == 0, done.stderr
    for duty in roles.Duty:
        set_password(server, duty, database)
        with psycopg.connect(roles.with_user(server.location(database), duty.role, server.passwords[duty.role])) as conn:
            roles.guard(conn, duty)          # no attribute, no membership: the duty's connection is accepted
            assert conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            assert conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone() == (duty is roles.MIGRATOR,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(roles.with_user(server.location(database), roles.READER.role, "wrong"))

    # a duty role that truly holds SUPERUSER is not quietly kept: only a superuser can take it away
    with server.connect(SUPERUSER, database) as conn:
        conn.execute("ALTER ROLE hrms_reader SUPERUSER")
    refused = server.psql(ADMIN, database, "-f", "-", input=text)
    assert refused.returncode != 0 and "superuser" in refused.stderr.lower()
    with server.connect(SUPERUSER, database) as conn:
        conn.execute("ALTER ROLE hrms_reader NOSUPERUSER")
