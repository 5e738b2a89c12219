"""A revert that destroys data needs the deployment's consent, never a launcher's.

`revert_migrations` runs down files, and a down file may drop every HR table. Whoever reaches the
UI can launch it, so before anything is reverted `check` reads the down files of the plan and
refuses, changing nothing, when one of them

- drops (DROP TABLE, DROP SCHEMA, TRUNCATE, DELETE, ALTER TABLE ... DROP COLUMN) a table that holds
  rows, or
- touches the audit log (any statement naming `core_auditlog`: its triggers, grants, checks, table),

unless the deployment names that migration in HRMS_REVERT_ALLOW (`app:version`, comma-separated,
e.g. `payroll:0003,core:0003`): an environment variable of the service, never run config. A revert
to `target: zero` is refused unless HRMS_ENV is set to `development` (set, not defaulted).

A permitted revert that drops rows first takes (`protect`) an encrypted, signed backup of every table
it will empty, under the backup folder's `reverts/` (a backup of tables restore_backup does not
restore: decrypt it by hand with the identity, see hrms_pipelines.backups.crypto), and writes one
audit row per such table (source `revert_migrations`, action `undo`, the backup id, the row count,
the migration and the consent that allowed it), committed before the first down file runs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from pglast import ast, parse_sql, parser as pg_parser
from pglast.enums import AlterTableType, ObjectType
from psycopg import sql

from hrms_pipelines import settings
from hrms_pipelines.migrations.files import Migration, MigrationError

ALLOW_ENV = "HRMS_REVERT_ALLOW"
AUDIT_LOG = "core_auditlog"
REVERTS_FOLDER = "reverts"
_ALLOW_ITEM = re.compile(r"(?P<app>[a-z0-9_]+):(?P<version>\d{4})")


class RevertRefused(MigrationError):
    """A revert the deployment has not consented to; nothing was changed."""


@dataclass
class Destructive:
    """What one down file would destroy: tables with rows (name -> rows) and whether it touches the audit log."""

    migration: Migration
    tables: dict[str, int] = field(default_factory=dict)
    audit_log: bool = False

    def reasons(self) -> list[str]:
        out = [f"drops or empties {t} ({n:,} rows)" for t, n in self.tables.items()]
        if self.audit_log:
            out.append("touches the audit log (hrms.core_auditlog: its table, triggers, grants or checks)")
        return out


def allowed() -> set[tuple[str, str]]:
    """The migrations HRMS_REVERT_ALLOW names; a malformed entry is an error naming it."""
    raw = os.environ.get(ALLOW_ENV, "")
    found = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        match = _ALLOW_ITEM.fullmatch(item)
        if not match:
            raise RevertRefused(f"{ALLOW_ENV}: {settings.shown(item)} is not app:version (like payroll:0003); "
                                "nothing was reverted")
        found.add((match["app"], match["version"]))
    return found


def _qualified(names: list[str]) -> str:
    return ".".join(names) if len(names) > 1 else f"{settings.HR_SCHEMA}.{names[0]}"


def _strings(node) -> list[str]:
    items = node if isinstance(node, (list, tuple)) else getattr(node, "items", None) or [node]
    return [getattr(item, "sval", None) for item in items if getattr(item, "sval", None) is not None]


def touched(text: str) -> tuple[set[str], set[str], bool]:
    """(tables dropped or emptied, schemas dropped, whether the audit log is named) by a down file."""
    tables: set[str] = set()
    schemas: set[str] = set()
    for raw in parse_sql(text):
        stmt = raw.stmt
        if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
            tables.update(_qualified(_strings(obj)) for obj in stmt.objects)
        elif isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_SCHEMA:
            schemas.update(n for obj in stmt.objects for n in _strings(obj))
        elif isinstance(stmt, ast.TruncateStmt):
            tables.update(_qualified([r.schemaname, r.relname] if r.schemaname else [r.relname]) for r in stmt.relations)
        elif isinstance(stmt, ast.DeleteStmt):
            r = stmt.relation
            tables.add(_qualified([r.schemaname, r.relname] if r.schemaname else [r.relname]))
        elif isinstance(stmt, ast.AlterTableStmt) and any(
                getattr(cmd, "subtype", None) == AlterTableType.AT_DropColumn for cmd in stmt.cmds or ()):
            r = stmt.relation
            tables.add(_qualified([r.schemaname, r.relname] if r.schemaname else [r.relname]))
    # the parse tree (comments left out) names the audit log: a DO body or a function's text included
    audit = AUDIT_LOG in pg_parser.parse_sql_json(text)
    return tables, schemas, audit


def _rows(conn: psycopg.Connection, table: str) -> int:
    """Rows in `table` (0 when it does not exist)."""
    if conn.execute("SELECT to_regclass(%s)", [table]).fetchone()[0] is None:
        return 0
    schema, name = table.split(".", 1)
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()[0]


def destructive(conn: psycopg.Connection, plan: Sequence[Migration]) -> list[Destructive]:
    """The migrations of `plan` whose down files would destroy rows or touch the audit log."""
    out = []
    for migration in plan:
        if migration.down is None:
            continue
        tables, schemas, audit = touched(migration.down.text)
        for schema in schemas:
            tables.update(f"{schema}.{t}" for (t,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition", [schema]))
        found = Destructive(migration, audit_log=audit or any(t.split(".")[-1].startswith(AUDIT_LOG) for t in tables))
        for table in sorted(tables):
            if (rows := _rows(conn, table)) > 0:
                found.tables[table] = rows
        if found.tables or found.audit_log:
            out.append(found)
    return out


def explicit_environment() -> str:
    return (os.environ.get(settings.ENVIRONMENT_ENV) or "").strip().lower()


def check(conn: psycopg.Connection, plan: Sequence[Migration], *, target: str) -> list[Destructive]:
    """Refuse (RevertRefused, nothing changed) a revert the deployment has not consented to; return
    the destructive migrations it has consented to."""
    if target == "zero" and plan and explicit_environment() != "development":
        raise RevertRefused(
            f"refusing to revert to target 'zero' ({len(plan)} migrations, every table they created): only a "
            f"deployment with {settings.ENVIRONMENT_ENV}=development may (this one: "
            f"{explicit_environment() or 'not set'}). Revert one app to a version instead; nothing was reverted.")
    found = destructive(conn, plan)
    consent = allowed()
    missing = [d for d in found if d.migration.key not in consent]
    if missing:
        lines = [f"- {d.migration.label}: {'; '.join(d.reasons())}" for d in missing]
        names = ",".join(f"{d.migration.app}:{d.migration.version}" for d in missing)
        raise RevertRefused(
            "refusing to revert: these down files would destroy data or the audit log's protection, and the "
            f"deployment has not allowed them:\n" + "\n".join(lines) + "\n"
            f"Nothing was reverted. To allow exactly these, the deployment sets {ALLOW_ENV}={names} in the "
            "service's environment (never run config); a backup of the tables is taken first.")
    return found


def protect(conn: psycopg.Connection, consented: Sequence[Destructive], *, run_id: str | None) -> str | None:
    """Back up (encrypted, signed) every table the consented reverts will empty, and record each in
    the audit log, committed before the revert starts. Returns the backup id (None: nothing to keep)."""
    from hrms_pipelines.backups import export
    from hrms_pipelines.backups.tables import set_copy_settings, table_shapes

    tables = list(dict.fromkeys(t for d in consented for t in d.tables))
    backup_id = None
    if tables:
        root = settings.backup_dir() / REVERTS_FOLDER
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            set_copy_settings(conn)
            shapes = table_shapes(conn, tables, restorable_only=False)
            pending = export.write_pending(conn, shapes, label="revert_migrations", run_id=run_id, root=root,
                                           what="nothing was reverted")
        backup_id = pending.publish().backup_id
    allow = os.environ.get(ALLOW_ENV, "")
    rows = []
    for d in consented:
        for table, count in (d.tables or {"hrms.core_auditlog": None}).items():
            rows.append((run_id, "revert_migrations", "undo", table, d.migration.label,
                         json.dumps({"rows": count}),
                         json.dumps({"reverted_by": d.migration.label, "backup_id": backup_id,
                                     "backup_folder": REVERTS_FOLDER if backup_id else None,
                                     "allowed_by": f"{ALLOW_ENV}={allow.strip()}",
                                     "reasons": d.reasons()})))
    if rows:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after) "
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)", rows)
    return backup_id
