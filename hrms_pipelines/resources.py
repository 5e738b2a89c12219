"""The HR database as a Dagster resource.

One resource per external system: `HrmsDatabase` is the only way the code location reaches the HR
database. It is built on a SQLAlchemy 2 engine with the psycopg 3 driver; code that needs COPY or
fine control of a transaction takes the raw psycopg connection from it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
import sqlalchemy as sa
from psycopg import sql
from pydantic import PrivateAttr

from hrms_pipelines import embedded, settings

_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def sqlalchemy_url(url: str) -> sa.URL:
    """Any PostgreSQL URL (libpq or SQLAlchemy form) as a SQLAlchemy URL on psycopg 3."""
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql+psycopg")


def redact(url: str) -> str:
    """The URL as a person would type it, with any password masked: what may appear in logs and metadata."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return "<unparsable database URL>"
    user = (parsed.username or "") + (":***" if parsed.password else "")
    host = (parsed.host or "") + (f":{parsed.port}" if parsed.port else "")
    query = "&".join(f"{k}={v}" for k, v in parsed.query.items() if k != "password")
    return f"postgresql://{user}{'@' if user else ''}{host}/{parsed.database or ''}" + (f"?{query}" if query else "")


def engine_for(url: str) -> sa.Engine:
    """One engine (and connection pool) per URL per process."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = sa.create_engine(
                sqlalchemy_url(url),
                pool_pre_ping=True,
                pool_size=2,
                max_overflow=8,
                connect_args={"application_name": "hrms_pipelines"},
            )
            _ENGINES[url] = engine
        return engine


def _timeout(value: str | int | None) -> str | None:
    if value is None:
        return None
    return f"{value}ms" if isinstance(value, int) else value


class HrmsDatabase(dg.ConfigurableResource):
    """The HR database (PostgreSQL).

    `url` comes from the HRMS_DATABASE_URL environment variable; left empty, the embedded
    PostgreSQL under `.hrms/` is started (or joined) and used.
    """

    url: str = ""

    _resolved: str | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        if self._resolved is None:
            self._resolved = self.url or embedded.database_url()
        return self._resolved

    def display_url(self) -> str:
        return redact(self.resolved_url())

    def engine(self) -> sa.Engine:
        return engine_for(self.resolved_url())

    @contextmanager
    def connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A raw psycopg 3 connection from the pool (COPY, server-side cursors, notices)."""
        pooled = self.engine().raw_connection()
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
        *,
        as_importer: bool = False,
        lock_timeout: str | int | None = None,
        statement_timeout: str | int | None = None,
    ) -> Iterator[psycopg.Connection]:
        """One transaction on a connection of the pool; see `local_transaction`."""
        with self.connection() as conn:
            with local_transaction(conn, as_importer=as_importer, lock_timeout=lock_timeout,
                                   statement_timeout=statement_timeout):
                yield conn


@contextmanager
def local_transaction(
    conn: psycopg.Connection,
    *,
    as_importer: bool = False,
    lock_timeout: str | int | None = None,
    statement_timeout: str | int | None = None,
    force_rollback: bool = False,
) -> Iterator[psycopg.Connection]:
    """A transaction on `conn` that commits when the block ends (unless `force_rollback`) and rolls
    back when it raises.

    `as_importer` switches to the import role for the transaction (`SET LOCAL ROLE`), so the
    statements run without DELETE or TRUNCATE privileges whatever the connecting user has.
    Timeouts are `SET LOCAL` too: they end with the transaction.
    """
    with conn.transaction(force_rollback=force_rollback):
        set_local_timeouts(conn, lock_timeout=lock_timeout, statement_timeout=statement_timeout)
        if as_importer:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(settings.IMPORT_ROLE)))
        yield conn


def set_local_timeouts(
    conn: psycopg.Connection, *, lock_timeout: str | int | None = None, statement_timeout: str | int | None = None
) -> None:
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if (value := _timeout(value)) is not None:
            conn.execute("SELECT set_config(%s, %s, true)", [name, value])
