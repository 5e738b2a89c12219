"""One database login role per duty; each job connects as the role of its duty, never as a superuser.

| duty       | role            | may                                                                 |
|------------|-----------------|---------------------------------------------------------------------|
| migrator   | hrms_migrator   | own the schema: apply and revert migrations, audit-partition upkeep |
| importer   | hrms_importer   | SELECT, INSERT, UPDATE on HR tables; never DELETE or TRUNCATE        |
| restorer   | hrms_restorer   | replace rows of the tables an import stage backs up (restore, undo) |
| reader     | hrms_reader     | SELECT (checks, sensors, reports); INSERT of failure alerts          |

The audit log is INSERT-only for every one of them: it belongs to hrms_audit_owner, a NOLOGIN role
no duty is a member of (core/0005, hrms_pipelines.audit_owner), and triggers refuse UPDATE, DELETE and
TRUNCATE. No duty is a member of any role: a backfill reads its standbys' replay lag through
hrms_monitor.standby_replay_lag(), a function of the NOLOGIN role hrms_monitor, which holds
pg_read_all_stats (that role shows every session's statement text, so no duty holds it).
What each role may do on each table is granted by the migrations (core/0003, core/0005);
this module creates the roles and the schemas, which needs an administrator (the superuser of the
embedded server, or the managed service's admin role), and refuses any connection that is more
privileged than its duty. Every administrative session pins its search_path (pin_search_path) and
the SQL it runs is qualified: nothing a migration can create is ever called by an administrator.

Where each duty connects (deployment configuration, read from the environment):
- `HRMS_<DUTY>_URL` (e.g. HRMS_IMPORTER_URL): a full URL for that duty, used as given;
- else `HRMS_DATABASE_URL` with the duty's role as the user and `HRMS_<DUTY>_PASSWORD` as password
  (or libpq's password file, `passfile=` / PGPASSFILE);
- else the embedded server under .hrms/, as the duty's role.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from hrms_pipelines import audit_owner, settings


@dataclass(frozen=True)
class _DutyInfo:
    role: str
    purpose: str


class Duty(Enum):
    MIGRATOR = _DutyInfo("hrms_migrator", "owns the schema; applies and reverts migrations; audit-partition upkeep")
    IMPORTER = _DutyInfo(settings.IMPORT_ROLE, "imports, seeds, backfills: SELECT, INSERT, UPDATE; never DELETE")
    RESTORER = _DutyInfo("hrms_restorer", "restores backups and undoes runs on the tables an import stage writes")
    READER = _DutyInfo("hrms_reader", "asset checks, sensors, reports: read only (and records failure alerts)")

    @property
    def role(self) -> str:
        return self.value.role

    @property
    def purpose(self) -> str:
        return self.value.purpose

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def url_env(self) -> str:
        return f"HRMS_{self.name}_URL"

    @property
    def password_env(self) -> str:
        return f"HRMS_{self.name}_PASSWORD"


MIGRATOR, IMPORTER, RESTORER, READER = Duty.MIGRATOR, Duty.IMPORTER, Duty.RESTORER, Duty.READER
ALL_ROLES = tuple(d.role for d in Duty)

# Built-in roles that reach the server's files or processes: no duty may hold them.
DANGEROUS_BUILTIN_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                           "pg_signal_backend", "pg_checkpoint", "pg_create_subscription")


ADMIN_SEARCH_PATH = "pg_catalog, pg_temp"


def pin_search_path(conn: psycopg.Connection) -> None:
    """An administrative session resolves names only in pg_catalog (then pg_temp): nothing a
    migration can create (a schema named like a role, an operator, a function) is ever called."""
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")


class RoleError(Exception):
    """A connection that must not be used for its duty, or roles that are not set up; says what to do."""


# --------------------------------------------------------------------------------------------------
# URLs


def with_user(url: str, user: str, password: str | None = None) -> str:
    """`url` (libpq URL form) with its user (and password) replaced; host, database, options kept."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("user", "password")]
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, urlencode(query, safe="/"), parts.fragment))


def url_user(url: str) -> str | None:
    parts = urlsplit(url)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "user":
            return value
    if "@" in parts.netloc:
        return unquote(parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]) or None
    return None


def duty_url(duty: Duty, location: str | None = None) -> str:
    """Where `duty` connects: its own URL variable, else the location URL (HRMS_DATABASE_URL) as the
    duty's role. With neither, RoleError (hrms_pipelines.resources.duty_url adds the embedded server)."""
    own = os.environ.get(duty.url_env)
    if own and location is None:
        return own
    if location is None:
        location = os.environ.get(settings.DATABASE_URL_ENV)
    if not location:
        raise RoleError(f"no database configured for the {duty.key} duty: set {duty.url_env} or {settings.DATABASE_URL_ENV}")
    return with_user(location, duty.role, os.environ.get(duty.password_env) or None)


# --------------------------------------------------------------------------------------------------
# The guard every job connection passes


def guard(conn: psycopg.Connection, duty: Duty) -> None:
    """Refuse a connection more privileged than `duty`: a superuser, CREATEROLE, BYPASSRLS or
    REPLICATION role, a member of a role that reads or runs things on the server or of another
    duty's role; for every duty but the migrator, one that owns or may create in the HR schema."""
    row = conn.execute(
        """
        SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolbypassrls, r.rolreplication,
               ARRAY(SELECT b.rolname FROM pg_roles b
                     WHERE b.oid <> r.oid AND pg_has_role(r.oid, b.oid, 'MEMBER')
                       AND (b.rolsuper OR b.rolcreaterole OR b.rolbypassrls
                            OR b.rolname = ANY (%(dangerous)s) OR b.rolname = ANY (%(duties)s))
                     ORDER BY 1),
               coalesce((SELECT pg_has_role(r.oid, n.nspowner, 'MEMBER') OR has_schema_privilege(r.oid, n.oid, 'CREATE')
                         FROM pg_namespace n WHERE n.nspname = %(schema)s), false)
        FROM pg_roles r WHERE r.rolname = session_user
        """,
        {"dangerous": list(DANGEROUS_BUILTIN_ROLES), "duties": list(ALL_ROLES), "schema": settings.HR_SCHEMA},
    ).fetchone()
    name, superuser, createrole, bypassrls, replication, memberships, owns_schema = row
    problems = [label for flag, label in ((superuser, "is a superuser"), (createrole, "has CREATEROLE"),
                                          (bypassrls, "has BYPASSRLS"), (replication, "has REPLICATION")) if flag]
    if memberships:
        problems.append(f"is a member of {', '.join(memberships)}")
    if owns_schema and duty is not MIGRATOR:
        problems.append(f"owns or may create objects in the {settings.HR_SCHEMA} schema (that is the migrator's duty)")
    if problems:
        raise RoleError(
            f"refusing to connect as {name!r} for the {duty.key} duty: the role {'; '.join(problems)}. "
            f"Each duty logs in as its own unprivileged role ({duty.role} by default); set {duty.url_env} "
            f"(or HRMS_DATABASE_URL plus {duty.password_env}) to that role's login. "
            "`python -m hrms_pipelines.roles sql` prints the statements an administrator runs to create the roles."
        )


# --------------------------------------------------------------------------------------------------
# Creating the roles (an administrator's job)


MONITOR_ROLE = "hrms_monitor"
"""NOLOGIN; a member of pg_read_all_stats (when the administrator can grant it); owns the schema
hrms_monitor and its one SECURITY DEFINER function, hrms_monitor.standby_replay_lag(), which the
import role may execute (a backfill's replica-lag throttle, hrms_pipelines.backfills.throttle)."""
MONITOR_SCHEMA = "hrms_monitor"
REPLAY_LAG_FUNCTION = "hrms_monitor.standby_replay_lag()"
MONITOR_GRANT = f"GRANT pg_read_all_stats TO {MONITOR_ROLE}"
"""What an administrator who cannot grant pg_read_all_stats asks its provider (or a superuser) to run."""


def bootstrap_statements(database: str, passwords: dict[Duty, str] | None = None) -> list[sql.Composable]:
    """What an administrator runs once per cluster and database, idempotent: the login roles with
    no special attribute and membership of nothing; the audit log's owner (hrms_pipelines.audit_owner);
    the schemas (so the migrator needs no CREATE on the database); the monitor role and its function
    (a backfill reads its standbys' replay lag through it). Written for a session whose search_path
    is pinned (pin_search_path), and qualified besides.

    Runs as a superuser or as a managed service's administrator (CREATEROLE, CREATEDB; PostgreSQL
    15-18). Handing a schema or a function to a role needs the right to SET ROLE to it: the
    administrator grants itself that on the three roles it hands something to (16+: SET only, no
    INHERIT), does the owner's part as the owner, and revokes it at the end."""
    passwords = passwords or {}
    statements: list[sql.Composable] = []
    for duty in Duty:
        statements.append(sql.SQL(audit_owner.ROLE_TEMPLATE).format(
            name=sql.Literal(duty.role), role=sql.Identifier(duty.role), login=sql.SQL("LOGIN"), can_login=sql.SQL("true")))
        if duty in passwords:
            statements.append(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(duty.role), sql.Literal(passwords[duty])))
    db = sql.Identifier(database)
    migrator = sql.Identifier(MIGRATOR.role)
    # No duty creates schemas: the HR schema belongs to the audit log's owner (the owner of a schema
    # may drop any table in it), the ledger's to the migrator; the migrator creates inside both.
    statements.append(sql.SQL(_FIX_MEMBERSHIPS))  # type: ignore[arg-type]  # code, not input
    statements += [sql.SQL(s) for s in audit_owner.role_statements()]  # type: ignore[misc]  # code, not input
    statements.append(sql.SQL(audit_owner.nologin_role(MONITOR_ROLE)))  # type: ignore[arg-type]  # code, not input
    statements.append(sql.SQL(_ADMIN_MAY_SET.replace("{grant}", "GRANT")))  # type: ignore[arg-type]  # code, not input
    statements += [sql.SQL(s) for s in audit_owner.statements()]  # type: ignore[misc]  # code, not input
    statements += [sql.SQL(s) for s in _SCHEMAS]  # type: ignore[misc]  # code, not input
    statements.append(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC, {}").format(db, migrator))
    statements.append(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
        db, sql.SQL(", ").join(sql.Identifier(d.role) for d in Duty)))
    statements.append(sql.SQL(_FIX_OWNERS))  # type: ignore[arg-type]  # code, not input
    statements += [sql.SQL(s) for s in _MONITOR]  # type: ignore[misc]  # code, not input
    statements.append(sql.SQL(_ADMIN_MAY_SET.replace("{grant}", "REVOKE")))  # type: ignore[arg-type]  # code, not input
    return statements


# The administrator (unless a superuser) may SET ROLE to the roles it hands a schema or a function to
# for the length of the script: PostgreSQL 15 asks for membership (CREATEROLE may grant it), 16+ for
# the SET option (the creator of a role holds ADMIN OPTION on it); on 16+ without INHERIT, so the
# administrator's own sessions never carry the audit log owner's rights. The last statement revokes
# it again: nobody who logs in stays a member of hrms_audit_owner (a re-run grants it anew).
_ADMIN_MAY_SET = """DO $$
DECLARE
    v_role pg_catalog.name;
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        RETURN;
    END IF;
    FOREACH v_role IN ARRAY ARRAY['hrms_audit_owner', 'hrms_migrator', 'hrms_monitor']::pg_catalog.name[] LOOP
        IF '{grant}' OPERATOR(pg_catalog.=) 'REVOKE' THEN
            EXECUTE pg_catalog.format('REVOKE %I FROM %I', v_role, CURRENT_USER);
        ELSIF pg_catalog.current_setting('server_version_num')::pg_catalog.int4 OPERATOR(pg_catalog.>=) 160000 THEN
            EXECUTE pg_catalog.format('GRANT %I TO %I WITH INHERIT FALSE, SET TRUE', v_role, CURRENT_USER);
        ELSE
            EXECUTE pg_catalog.format('GRANT %I TO %I', v_role, CURRENT_USER);
        END IF;
    END LOOP;
END
$$"""


# Older versions granted the import role to the migrating user (harmless), and pg_read_all_stats to
# the import role (it reads every session's query text) — a duty's own role must hold no other role. Plain SQL, so an administrator can run exactly what bootstrap runs.
_FIX_MEMBERSHIPS = """
DO $fix$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT g.rolname AS granted, m.rolname AS member FROM pg_catalog.pg_auth_members am
             JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) am.roleid
             JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) am.member
             WHERE m.rolname OPERATOR(pg_catalog.=) ANY (ARRAY['hrms_migrator', 'hrms_importer', 'hrms_restorer',
                                                               'hrms_reader']::pg_catalog.name[]) LOOP
        BEGIN
            EXECUTE pg_catalog.format('REVOKE %I FROM %I', r.granted, r.member);
        EXCEPTION WHEN insufficient_privilege THEN
            -- 16+: a managed administrator may not revoke a predefined role it holds no ADMIN OPTION on
            -- (older versions granted pg_read_all_stats to the import role)
            RAISE WARNING '% is a member of % and % may not revoke it: ask your provider (or a superuser) to run: REVOKE % FROM %',
                r.member, r.granted, CURRENT_USER, pg_catalog.quote_ident(r.granted), pg_catalog.quote_ident(r.member);
        END;
    END LOOP;
END
$fix$"""

_SCHEMAS = ["""
DO $schemas$
BEGIN
    IF pg_catalog.to_regnamespace('hrms') IS NULL THEN
        CREATE SCHEMA hrms AUTHORIZATION hrms_audit_owner;
    END IF;
    IF pg_catalog.to_regnamespace('hrms_meta') IS NULL THEN
        CREATE SCHEMA hrms_meta AUTHORIZATION hrms_migrator;
    END IF;
    ALTER SCHEMA hrms OWNER TO hrms_audit_owner;
    ALTER SCHEMA hrms_meta OWNER TO hrms_migrator;
END
$schemas$""".strip(),
    # the grants on the HR schema are its owner's to give
    "SET ROLE hrms_audit_owner",
    "REVOKE CREATE ON SCHEMA hrms FROM PUBLIC",
    # with grant option: the migrations grant USAGE to the other duties
    "GRANT USAGE ON SCHEMA hrms TO hrms_migrator WITH GRANT OPTION",
    "GRANT CREATE ON SCHEMA hrms TO hrms_migrator",
    "RESET ROLE",
]

# The monitor: pg_read_all_stats lets a role read every session's query text (salaries in an UPDATE,
# passwords in an ALTER ROLE), so no duty holds it. hrms_monitor, a NOLOGIN role nobody is a member
# of, holds it (when the administrator can grant it: a superuser, 15's CREATEROLE, 16+'s ADMIN OPTION
# on pg_read_all_stats; otherwise a NOTICE says what to ask the provider for) and owns one function
# that returns only what a backfill's throttle needs; the import role may execute it.
_MONITOR_GRANT = """DO $$
BEGIN
    IF pg_catalog.pg_has_role('hrms_monitor', 'pg_read_all_stats', 'MEMBER') THEN
        RETURN;
    END IF;
    IF (SELECT rolsuper OR (rolcreaterole AND pg_catalog.current_setting('server_version_num')::pg_catalog.int4
                                              OPERATOR(pg_catalog.<) 160000)
        FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) CURRENT_USER)
       OR pg_catalog.pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'USAGE WITH ADMIN OPTION') THEN
        GRANT pg_read_all_stats TO hrms_monitor;
    ELSE
        RAISE NOTICE '% may not grant pg_read_all_stats (PostgreSQL 16+ asks for ADMIN OPTION on it): ask your provider (or a superuser) to run: GRANT pg_read_all_stats TO hrms_monitor; until then a backfill refuses to start on a primary that has standbys (it cannot read their replay lag)', CURRENT_USER;
    END IF;
END
$$"""

_REPLAY_LAG = r"""
CREATE OR REPLACE FUNCTION hrms_monitor.standby_replay_lag()
    RETURNS TABLE (standby pg_catalog.text, state pg_catalog.text, replay_position pg_catalog.float8,
                   replay_lag_s pg_catalog.float8, primary_position pg_catalog.float8)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT COALESCE(NULLIF(r.application_name, ''), 'walreceiver') OPERATOR(pg_catalog.||) ' ('
               OPERATOR(pg_catalog.||) COALESCE(pg_catalog.host(r.client_addr), 'local socket') OPERATOR(pg_catalog.||) ')',
           r.state,
           (r.replay_lsn OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.float8,
           pg_catalog.date_part('epoch', r.replay_lag)::pg_catalog.float8,
           (pg_catalog.pg_current_wal_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.float8
    FROM pg_catalog.pg_stat_replication r
    WHERE r.state IS NULL OR r.state OPERATOR(pg_catalog.=) ANY (ARRAY['streaming', 'catchup']::pg_catalog.text[])
$fn$"""

_MONITOR = [
    _MONITOR_GRANT,
    "DO $$ BEGIN IF pg_catalog.to_regnamespace('hrms_monitor') IS NULL THEN "
    "CREATE SCHEMA hrms_monitor AUTHORIZATION hrms_monitor; END IF; END $$",
    "ALTER SCHEMA hrms_monitor OWNER TO hrms_monitor",
    "SET ROLE hrms_monitor",
    "REVOKE ALL ON SCHEMA hrms_monitor FROM PUBLIC",
    "GRANT USAGE ON SCHEMA hrms_monitor TO hrms_importer",
    _REPLAY_LAG.strip(),
    "REVOKE ALL ON FUNCTION hrms_monitor.standby_replay_lag() FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION hrms_monitor.standby_replay_lag() TO hrms_importer",
    "RESET ROLE",
]

# An existing deployment whose migrations ran as a superuser hands the HR tables to the migrator
# (all but the audit log's, which core/0005 hands to hrms_audit_owner and which stay there).
_FIX_OWNERS = """
DO $fix$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.nspname, c.relname,
                    CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'v' THEN 'VIEW'
                         WHEN c.relkind OPERATOR(pg_catalog.=) 'm' THEN 'MATERIALIZED VIEW'
                         WHEN c.relkind OPERATOR(pg_catalog.=) 'S' THEN 'SEQUENCE'
                         WHEN c.relkind OPERATOR(pg_catalog.=) 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
             WHERE n.nspname OPERATOR(pg_catalog.=) ANY (ARRAY['hrms', 'hrms_meta']::pg_catalog.name[])
               AND NOT c.relowner OPERATOR(pg_catalog.=) ANY (ARRAY['hrms_migrator'::pg_catalog.regrole,
                                                                  'hrms_audit_owner'::pg_catalog.regrole]::pg_catalog.oid[])
               AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm', 'S', 'f']::pg_catalog.char[])
               AND NOT (c.relkind OPERATOR(pg_catalog.=) 'S' AND EXISTS (
                        SELECT FROM pg_catalog.pg_depend d WHERE d.objid OPERATOR(pg_catalog.=) c.oid
                        AND d.deptype OPERATOR(pg_catalog.=) ANY (ARRAY['a', 'i']::pg_catalog.char[])))
             ORDER BY c.relkind OPERATOR(pg_catalog.=) 'S', 1, 2 LOOP
        EXECUTE pg_catalog.format('ALTER %s %I.%I OWNER TO hrms_migrator', r.kind, r.nspname, r.relname);
    END LOOP;
    FOR r IN SELECT p.oid::pg_catalog.regprocedure AS routine FROM pg_catalog.pg_proc p
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
             WHERE n.nspname OPERATOR(pg_catalog.=) ANY (ARRAY['hrms', 'hrms_meta']::pg_catalog.name[])
               AND NOT p.proowner OPERATOR(pg_catalog.=) ANY (ARRAY['hrms_migrator'::pg_catalog.regrole,
                                                                  'hrms_audit_owner'::pg_catalog.regrole]::pg_catalog.oid[]) LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s OWNER TO hrms_migrator', r.routine);
    END LOOP;
END
$fix$"""


def bootstrap(admin: psycopg.Connection, database: str, passwords: dict[Duty, str] | None = None) -> None:
    """Create or fix the duty roles, from an administrator's connection to `database` (autocommit).

    Idempotent: the embedded server runs it at every start; tests run it on their server. On an
    existing deployment it also hands the schema to the migrator and drops memberships a duty must
    not hold. Processes starting together (`dagster dev`) may race on the cluster-wide roles: a lost
    race is retried."""
    for attempt in range(5):
        try:
            pin_search_path(admin)
            with admin.transaction():
                admin.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('hrms_pipelines.roles.bootstrap'))")
                for statement in bootstrap_statements(database, passwords):
                    admin.execute(statement)
            return
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.InternalError):
            if attempt == 4:
                raise


def bootstrap_sql(database: str) -> str:
    """The statements of `bootstrap`, as SQL text an administrator pastes into psql."""
    return (f"SET search_path = {ADMIN_SEARCH_PATH};\n"
            + ";\n".join(s.as_string(None) for s in bootstrap_statements(database)) + ";\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hrms_pipelines.roles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    print_sql = sub.add_parser("sql", help="print the SQL that creates the duty roles (for an administrator)")
    print_sql.add_argument("--database", default="hrms")
    args = parser.parse_args(argv)
    if args.action == "sql":
        sys.stdout.write(f"-- Run as an administrator, connected to the database {args.database!r}.\n"
                         "-- Then give each role a password with psql's \\password (it never shows in a log):\n"
                         + "".join(f"--   \\password {d.role}\n" for d in Duty)
                         + bootstrap_sql(args.database))
    return 0


if __name__ == "__main__":
    sys.exit(main())
