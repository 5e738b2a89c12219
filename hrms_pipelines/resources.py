"""The HR database as a Dagster resource.

One resource per external system: `HrmsDatabase` is the only way the code location reaches the HR
database. It has no config fields: where it connects is deployment configuration (environment
variables, see hrms_pipelines.roles), because a field of a resource bound in `Definitions` can be
overridden by anyone who launches a run. Every caller names its duty, and gets a connection that
logged in as that duty's role (checked on connect: never a superuser, never more than the duty).

It is built on SQLAlchemy 2 engines (one pool per duty) with the psycopg 3 driver; code that needs
COPY or fine control of a transaction takes the raw psycopg connection from it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
import sqlalchemy as sa

from hrms_pipelines import embedded, locks, roles, settings
from hrms_pipelines.roles import IMPORTER, MIGRATOR, READER, RESTORER, Duty

__all__ = ["HrmsDatabase", "PinnedDatabase", "Duty", "MIGRATOR", "IMPORTER", "RESTORER", "READER",
           "local_transaction", "set_local_timeouts", "redact"]

_ENGINES: dict[tuple[str, Duty], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def sqlalchemy_url(url: str) -> sa.URL:
    """Any PostgreSQL URL (libpq or SQLAlchemy form) as a SQLAlchemy URL on psycopg 3."""
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql+psycopg")


_SECRET_PARAMETER = re.compile(r"((?:^|[\s?&;])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """A database URL or DSN as typed, with every password masked: what may appear in logs and metadata.

    Masks the password of the userinfo (also one holding an unencoded '@', '/' or '?': everything up
    to the last '@' is userinfo), and `password=` / `sslpassword=` parameters of a URL query or a
    key=value DSN. An empty password shows as none at all."""
    text = str(url)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        at = rest.rfind("@")
        if at != -1:
            userinfo, after = rest[:at], rest[at + 1:]
            user, _, password = userinfo.partition(":")
            rest = user + (":***" if password else "") + "@" + after
        text = f"{scheme}://{rest}"
    return _SECRET_PARAMETER.sub(lambda m: m.group(1) + "***", text)


def engine_for(url: str, duty: Duty) -> sa.Engine:
    """One engine (and connection pool) per URL and duty per process; each new connection is checked
    against its duty (roles.guard) before it is used."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get((url, duty))
        if engine is None:
            engine = sa.create_engine(
                sqlalchemy_url(url),
                pool_pre_ping=True,
                pool_size=2,
                max_overflow=8,
                connect_args={"application_name": f"hrms_pipelines:{duty.key}"},
            )

            @sa.event.listens_for(engine, "connect")
            def _check_role(dbapi_connection, _record, duty=duty):
                try:
                    roles.guard(dbapi_connection, duty)
                finally:
                    dbapi_connection.rollback()

            _ENGINES[(url, duty)] = engine
        return engine


def dispose_engines(database: str) -> None:
    """Close the pools of every engine on the database named `database` (tests drop their databases)."""
    with _ENGINES_LOCK:
        for key in [k for k in _ENGINES if sa.make_url(k[0]).database == database]:
            _ENGINES.pop(key).dispose()


def _timeout(value: str | int | None) -> str | None:
    if value is None:
        return None
    return f"{value}ms" if isinstance(value, int) else value


def duty_url(duty: Duty, location: str | None = None) -> str:
    """Where `duty` connects (roles.duty_url); with nothing configured, the embedded server's HR
    database (started and bootstrapped on first use)."""
    if location is None and not os.environ.get(duty.url_env) and not os.environ.get(settings.DATABASE_URL_ENV):
        location = embedded.hr_database_url()
    return roles.duty_url(duty, location)


class HrmsDatabase(dg.ConfigurableResource):
    """The HR database (PostgreSQL), one login role per duty.

    Where each duty connects comes from the environment (HRMS_<DUTY>_URL, else HRMS_DATABASE_URL as
    the duty's role, else the embedded PostgreSQL under .hrms/); nothing about it is run config.
    """

    def _location(self) -> str | None:
        """A URL every duty connects to as its own role; None: the deployment's configuration."""
        return None

    def url(self, duty: Duty) -> str:
        return duty_url(duty, self._location())

    def display_url(self, duty: Duty = READER) -> str:
        return f"{redact(self.url(duty))} ({duty.key})"

    def engine(self, duty: Duty) -> sa.Engine:
        return engine_for(self.url(duty), duty)

    @contextmanager
    def connection(self, duty: Duty, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A raw psycopg 3 connection, logged in as `duty`'s role (COPY, server-side cursors, notices)."""
        pooled = self.engine(duty).raw_connection()
        conn: psycopg.Connection = pooled.driver_connection  # type: ignore[assignment]
        try:
            if autocommit:
                conn.autocommit = True
            yield conn
        finally:
            try:
                if not conn.closed:
                    if conn.autocommit:
                        conn.autocommit = False
                    else:
                        conn.rollback()
            finally:
                pooled.close()

    @contextmanager
    def transaction(
        self,
        duty: Duty,
        *,
        lock_timeout: str | int | None = None,
        statement_timeout: str | int | None = None,
        force_rollback: bool = False,
        lock: locks.TransactionLock | None = None,
    ) -> Iterator[psycopg.Connection]:
        """One transaction as `duty`'s role on a connection of the pool; see `local_transaction`."""
        with self.connection(duty) as conn:
            with local_transaction(conn, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                                   force_rollback=force_rollback, lock=lock):
                yield conn


class PinnedDatabase(HrmsDatabase):
    """Every duty at `location` (its user replaced by each duty's role): for tests and benchmarks,
    which point at a database of their own. Never bound in Definitions, so no run config reaches it."""

    location: str

    def _location(self) -> str | None:
        return self.location


@contextmanager
def local_transaction(
    conn: psycopg.Connection,
    *,
    lock_timeout: str | int | None = None,
    statement_timeout: str | int | None = None,
    force_rollback: bool = False,
    lock: locks.TransactionLock | None = None,
) -> Iterator[psycopg.Connection]:
    """A transaction on `conn` that commits when the block ends (unless `force_rollback`) and rolls
    back when it raises. Timeouts are `SET LOCAL`: they end with the transaction. With `lock`, the
    transaction takes that advisory lock as its first statement, waiting for it as the lock says."""
    begin = lock.transaction(conn, force_rollback=force_rollback) if lock else conn.transaction(force_rollback=force_rollback)
    with begin:
        set_local_timeouts(conn, lock_timeout=lock_timeout, statement_timeout=statement_timeout)
        yield conn


def set_local_timeouts(
    conn: psycopg.Connection, *, lock_timeout: str | int | None = None, statement_timeout: str | int | None = None
) -> None:
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if (value := _timeout(value)) is not None:
            conn.execute("SELECT set_config(%s, %s, true)", [name, value])
