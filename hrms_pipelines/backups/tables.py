"""Which tables a backup may hold and a restore may rewrite, and what each table looks like now.

Restorable are exactly the tables an import stage backs up (`Stage.tables` of the stages in
hrms_pipelines.imports): that is the one list. The restorer role's grants (migration core/0003) give
it the same tables and no others; a test keeps the two equal. Everything else is refused by name,
when a backup is taken and when one is read: the audit log (append-only), application accounts,
roles and permissions, backfill checkpoints, alerts, reference data, payroll and leave.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from collections.abc import Sequence

import psycopg
from psycopg import sql

from hrms_pipelines import settings
from hrms_pipelines.backups.manifest import TABLE_NAME, BackupError, Column

# Tables people may expect a restore to bring back, and why it never does.
NEVER_RESTORED = {
    "core_auditlog": "the audit log is append-only: no restore rewrites history",
    "core_useraccount": "application accounts (logins and password hashes) are managed by administrators, never restored",
    "core_role": "roles are access control, set by the seed and administrators, never restored",
    "core_permission": "permissions are access control, set by the seed and administrators, never restored",
    "core_rolepermission": "role permissions are access control, set by the seed and administrators, never restored",
    "core_backfillcheckpoint": "backfill checkpoints belong to the backfill framework, never restored",
    "core_alert": "failure alerts are an operational record, never restored",
}

# Session settings that make COPY's text output exact and independent of the server's defaults.
COPY_SETTINGS = {
    "client_encoding": "UTF8",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


@functools.cache
def restorable_tables() -> tuple[str, ...]:
    """Every table an import stage backs up, in stage order (parents first), each once."""
    from hrms_pipelines.imports import history, ladders, org, users  # the stages own their table lists

    return tuple(dict.fromkeys(t for stage in (ladders.STAGE, org.STAGE, users.STAGE, history.STAGE) for t in stage.tables))


def qualified(name: str) -> str:
    name = name.strip()
    return name if "." in name else f"{settings.HR_SCHEMA}.{name}"


def refuse_unrestorable(table: str, where: str) -> None:
    """BackupError naming `table` and why, unless an import stage backs it up."""
    if table in restorable_tables():
        return
    bare = table.split(".", 1)[-1]
    reason = next((why for prefix, why in NEVER_RESTORED.items() if bare == prefix or bare.startswith(prefix + "_")),
                  "no import stage backs it up")
    raise BackupError(
        f"{where}: {table} is not restorable ({reason}). Only the tables the import stages back up are: "
        f"{', '.join(restorable_tables())}."
    )


@dataclass(frozen=True)
class TableShape:
    table: str  # schema.name
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    partitioned: bool

    @property
    def identifier(self) -> sql.Composable:
        schema, name = self.table.split(".")
        return sql.Identifier(schema, name)

    @property
    def column_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c.name) for c in self.columns)


def table_shapes(conn: psycopg.Connection, tables: Sequence[str], *, restorable_only: bool = True) -> list[TableShape]:
    """Columns (stored, not generated), primary key and kind of each table; unknown ones refused, and
    unrestorable ones unless `restorable_only=False` (a revert's backup of the tables it drops)."""
    shapes = []
    for name in dict.fromkeys(qualified(t) for t in tables):
        if not TABLE_NAME.fullmatch(name) or name.split(".")[0] != settings.HR_SCHEMA:
            raise BackupError(f"cannot back up {settings.excerpt(name)}: only tables of the "
                              f"{settings.HR_SCHEMA!r} schema are backed up")
        schema, relname = name.split(".")
        row = conn.execute(
            "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            [schema, relname],
        ).fetchone()
        if row is None:
            raise BackupError(f"table {name} does not exist")
        if restorable_only:
            refuse_unrestorable(name, "cannot back up")
        oid, relkind = row
        columns = tuple(
            Column(n, t) for n, t in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                [oid],
            )
        )
        primary_key = tuple(
            r[0] for r in conn.execute(
                "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, pos) "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.pos",
                [oid],
            )
        )
        if not primary_key:
            raise BackupError(f"table {name} has no primary key: a backup of it could not be restored exactly")
        shapes.append(TableShape(name, columns, primary_key, relkind == "p"))
    if not shapes:
        raise BackupError("no tables to back up")
    return shapes


def set_copy_settings(conn: psycopg.Connection) -> None:
    for name, value in COPY_SETTINGS.items():
        conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value)))


def require_idle(conn: psycopg.Connection, what: str) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise BackupError(
            f"{what} needs a connection outside any transaction (it opens its own); commit or roll back first"
        )
