"""The generic field backfill: set one column of an HR table to one value, where a structured filter
matches (the seed's `backfill_data --model --field --value --filter`).

Everything a user gives is checked against the live schema before a row changes:
- the table must be on the allow-list of HR tables (never the audit log, checkpoints, login
  accounts or access control) and exist, with a single-column integer primary key;
- the column and the filter column must exist (information_schema), the column must be writable
  (not the key, not generated or identity);
- the operator comes from a fixed set; values are bound parameters, converted by PostgreSQL to the
  column's type (a wrong type is an error naming table, column, type and value);
- a trial UPDATE of one matching row, rolled back, surfaces constraint violations (CHECK, foreign
  key, NOT NULL) before the first batch.
Identifiers are composed with psycopg.sql.Identifier; no text from the user becomes SQL.

Personal and pay columns (privacy.py). A `field_backfill` takes its value from run config, which
Dagster stores and shows to anyone who can open the UI: so the job refuses to set such a column, or
to filter on one by value, unless the deployment lists it (`table.column`, comma-separated) in
HRMS_BACKFILL_SENSITIVE_COLUMNS. A registered field backfill (code, reviewed) is not limited. Either
way the values of such columns are masked in every message (privacy.mask_cell).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from hrms_pipelines import errors, privacy, settings
from hrms_pipelines.backfills.registry import Backfill, BackfillError, BackfillRegistry, Batch, Options, Plan
from hrms_pipelines.resources import local_transaction

# The HR tables a field backfill may change. Left out on purpose: core_* (audit log, backfill
# checkpoints, roles, permissions, login accounts) and imports_importrecord (the import ledger).
ALLOWED_TABLES: frozenset[str] = frozenset({
    "employees_employee", "employees_jobgrade", "employees_jobcategory",
    "org_organization", "org_department", "org_tribe", "org_chapter", "org_team",
    "ladders_ladder", "ladders_aspect", "ladders_level",
    "history_timelineevent", "history_compensationsnapshot", "history_senioritysnapshot",
    "payroll_paycomponent", "payroll_taxbracket", "payroll_taxrelief", "payroll_ssnitrate",
    "payroll_banksortcode", "payroll_payrollrole", "payroll_payperiod", "payroll_payslip",
    "payroll_payslipline", "payroll_payrollrecord",
    "leave_leavetype", "leave_leaverequest",
    "discipline_misconductcategory", "discipline_grievancecategory",
})

# operator -> SQL; `in` and the null tests are built separately.
COMPARISONS: dict[str, str] = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
OPERATORS: tuple[str, ...] = (*COMPARISONS, "is_null", "is_not_null", "in")
MAX_IN_VALUES = 1000
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
NULL_TESTS = frozenset({"is_null", "is_not_null"})
SENSITIVE_COLUMNS_ENV = "HRMS_BACKFILL_SENSITIVE_COLUMNS"
"""Deployment configuration: the personal or pay columns (`table.column`, comma-separated) that the
field_backfill job may set or filter on by value."""

Scalar = str | int | float | bool | None


class FieldBackfillError(BackfillError):
    pass


@dataclass(frozen=True)
class FilterSpec:
    column: str
    operator: str
    value: Any = None


@dataclass(frozen=True)
class FieldSpec:
    table: str
    column: str
    value: Scalar
    filter: FilterSpec | None = None

    def checkpoint_name(self) -> str:
        """One checkpoint per distinct (table, column, value, filter): relaunching the same
        field backfill resumes it; a different value or filter is a different backfill."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"field:{normalize_table(self.table)}.{self.column}:{digest}"


def sensitive_columns_allowed() -> frozenset[str]:
    """`table.column` entries of HRMS_BACKFILL_SENSITIVE_COLUMNS (read when a run starts)."""
    raw = os.environ.get(SENSITIVE_COLUMNS_ENV, "")
    return frozenset(item.strip().lower().removeprefix(settings.HR_SCHEMA + ".") for item in raw.split(",") if item.strip())


def shown(column: str | None, value: Any, table: str) -> str:
    """`value` of `column` as a message may show it: repr, masked when the column holds personal or pay data."""
    if isinstance(value, (list, tuple)):
        return repr([privacy.mask_cell(column, v, table) for v in value])
    return repr(privacy.mask_cell(column, value, table))


def _check_sensitive(spec: FieldSpec, table: str, allowed: frozenset[str]) -> None:
    """Refuse a run-config field backfill that sets a personal or pay column, or filters on one by value,
    unless the deployment allows that column."""
    uses = []
    if privacy.is_sensitive(spec.column, table):
        uses.append((spec.column, "set"))
    if spec.filter is not None and str(spec.filter.operator).strip().lower() not in NULL_TESTS \
            and privacy.is_sensitive(spec.filter.column, table):
        uses.append((spec.filter.column, "filter on by value"))
    refused = [(c, how) for c, how in uses if f"{table}.{c}".lower() not in allowed]
    if refused:
        what = "; ".join(f"{how} {table}.{c} ({privacy.kind_of(c, table).value} data)" for c, how in refused)
        raise FieldBackfillError(
            f"field backfill of {settings.HR_SCHEMA}.{table}: refused to {what}. Run config is stored by Dagster and shown "
            "to anyone who can open its UI, so a value typed there would leave the HR tables in clear. Write a registered "
            "backfill (code, reviewed) instead, or, for a one-off correction the data owner approved, list the column in "
            f"the deployment's {SENSITIVE_COLUMNS_ENV} (e.g. {SENSITIVE_COLUMNS_ENV}={table}.{refused[0][0]}). "
            "Nothing was changed.")


def normalize_table(name: str) -> str:
    """`employees_employee`, `hrms.employees_employee` or the seed's `employees.Employee`."""
    text = name.strip()
    if text.lower().startswith(settings.HR_SCHEMA + "."):
        text = text[len(settings.HR_SCHEMA) + 1:]
    if text.count(".") == 1:  # Django's app_label.ModelName
        app, model = text.split(".")
        text = f"{app}_{model}"
    return text.lower()


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # format_type(), e.g. "numeric(5,2)"
    data_type: str  # information_schema's, e.g. "numeric"
    nullable: bool
    writable: bool


def _columns(conn: psycopg.Connection, table: str) -> dict[str, ColumnInfo]:
    rows = conn.execute(
        """
        SELECT c.column_name, format_type(a.atttypid, a.atttypmod), c.data_type, c.is_nullable = 'YES',
               c.is_generated = 'NEVER' AND c.is_identity = 'NO'
        FROM information_schema.columns c
        JOIN pg_attribute a ON a.attrelid = format('%%I.%%I', c.table_schema, c.table_name)::regclass
                           AND a.attname = c.column_name
        WHERE c.table_schema = %s AND c.table_name = %s
        ORDER BY c.ordinal_position
        """,
        [settings.HR_SCHEMA, table],
    ).fetchall()
    return {r[0]: ColumnInfo(*r) for r in rows}


def _primary_key(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    return conn.execute(
        """
        SELECT kcu.column_name, c.data_type
        FROM information_schema.table_constraints tc
        JOIN information_schema.key_column_usage kcu
          ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
        JOIN information_schema.columns c
          ON c.table_schema = tc.table_schema AND c.table_name = tc.table_name AND c.column_name = kcu.column_name
        WHERE tc.table_schema = %s AND tc.table_name = %s AND tc.constraint_type = 'PRIMARY KEY'
        ORDER BY kcu.ordinal_position
        """,
        [settings.HR_SCHEMA, table],
    ).fetchall()


def _as_parameter(value: Any) -> str | None:
    """Values go to PostgreSQL as untyped text parameters: the server converts them to the
    column's type (its own input rules, e.g. dates, numerics, booleans) or refuses them."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _filter_sql(spec: FilterSpec, columns: dict[str, ColumnInfo], where: str, table: str) -> tuple[sql.Composable, dict[str, Any]]:
    if spec.column not in columns:
        raise FieldBackfillError(f"{where}: filter column {settings.shown(spec.column)} does not exist; columns: {', '.join(columns)}")
    column = sql.Identifier(spec.column)
    operator = spec.operator.strip().lower() if isinstance(spec.operator, str) else spec.operator
    if operator not in OPERATORS:
        raise FieldBackfillError(
            f"{where}: filter operator {settings.shown(spec.operator)} is not allowed; use one of: {', '.join(OPERATORS)}")
    if operator in ("is_null", "is_not_null"):
        if spec.value not in (None, True):
            raise FieldBackfillError(f"{where}: filter operator {operator} takes no value (got {shown(spec.column, spec.value, table)})")
        return sql.SQL("{} IS NULL" if operator == "is_null" else "{} IS NOT NULL").format(column), {}
    if operator == "in":
        values = spec.value
        if not isinstance(values, (list, tuple)) or not values:
            raise FieldBackfillError(
                f"{where}: filter operator in needs a non-empty list of values (got {shown(spec.column, values, table)})")
        if len(values) > MAX_IN_VALUES:
            raise FieldBackfillError(f"{where}: filter operator in takes at most {MAX_IN_VALUES} values (got {len(values)})")
        if any(v is None for v in values):
            raise FieldBackfillError(f"{where}: filter operator in cannot match null; use is_null")
        params = {f"fb_in_{i}": _as_parameter(v) for i, v in enumerate(values)}
        placeholders = sql.SQL(", ").join(sql.Placeholder(name) for name in params)
        return sql.SQL("{} IN ({})").format(column, placeholders), params
    if spec.value is None or isinstance(spec.value, (list, tuple, dict)):
        raise FieldBackfillError(
            f"{where}: filter operator {operator} needs one value (got {shown(spec.column, spec.value, table)}); "
            "for null use is_null / is_not_null")
    return (sql.SQL("{} {} {}").format(column, sql.SQL(COMPARISONS[operator]), sql.Placeholder("fb_filter")),
            {"fb_filter": _as_parameter(spec.value)})


def _describe_database_error(exc: psycopg.Error, spec: FieldSpec, table: str, columns: dict[str, ColumnInfo],
                             stage: str) -> str:
    where = f"field backfill of {settings.HR_SCHEMA}.{table}.{spec.column}"
    message = exc.diag.message_primary or str(exc)
    if privacy.is_sensitive(spec.column, table) or (spec.filter is not None and privacy.is_sensitive(spec.filter.column, table)):
        message = errors.describe_database_error(exc)  # PostgreSQL's message may quote the value: masked
    if stage == "value":
        return (f"{where}: value {shown(spec.column, spec.value, table)} for column {spec.column} "
                f"({columns[spec.column].type}) was refused by PostgreSQL: {message}. Nothing was changed.")
    if stage == "filter" and spec.filter is not None:
        return (f"{where}: filter value {shown(spec.filter.column, spec.filter.value, table)} for column "
                f"{spec.filter.column} ({columns[spec.filter.column].type}) was refused by PostgreSQL: {message}. "
                "Nothing was changed.")
    if isinstance(exc, psycopg.errors.IntegrityError):
        constraint = exc.diag.constraint_name
        return (f"{where}: setting {spec.column} = {shown(spec.column, spec.value, table)} would violate "
                f"{'constraint ' + constraint if constraint else 'a constraint'}: {message}. Nothing was changed.")
    return f"{where}: PostgreSQL refused the backfill: {message}. Nothing was changed."


def plan_field_backfill(conn: psycopg.Connection, spec: FieldSpec, *, name: str | None = None,
                        sensitive_allowed: frozenset[str] | None = None) -> Plan:
    """Validate `spec` against the live schema and return the plan; raises FieldBackfillError.

    `sensitive_allowed`: for a spec from run config, the personal or pay columns (`table.column`) it
    may set or filter on by value (see the module docstring); None for a registered one (code)."""
    table = normalize_table(spec.table)
    where = f"field backfill of {settings.shown(spec.table)}"
    if table not in ALLOWED_TABLES:
        raise FieldBackfillError(
            f"{where}: table {settings.shown(spec.table)} is not one a field backfill may change; allowed tables: "
            + ", ".join(sorted(ALLOWED_TABLES)))
    if sensitive_allowed is not None:
        _check_sensitive(spec, table, sensitive_allowed)
    columns = _columns(conn, table)
    if not columns:
        raise FieldBackfillError(f"{where}: table {settings.HR_SCHEMA}.{table} does not exist in this database "
                                 "(are the migrations applied?)")
    where = f"field backfill of {settings.HR_SCHEMA}.{table}"
    key = _primary_key(conn, table)
    if len(key) != 1 or key[0][1] not in INTEGER_TYPES:
        raise FieldBackfillError(f"{where}: needs a single-column integer primary key for keyset batches "
                                 f"(has {', '.join(f'{c} {t}' for c, t in key) or 'none'})")
    key_column = key[0][0]
    if spec.column not in columns:
        raise FieldBackfillError(f"{where}: column {settings.shown(spec.column)} does not exist; columns: {', '.join(columns)}")
    target = columns[spec.column]
    if spec.column == key_column or not target.writable:
        raise FieldBackfillError(f"{where}: column {spec.column!r} cannot be backfilled (primary key, generated or identity)")
    if spec.value is None and not target.nullable:
        raise FieldBackfillError(f"{where}: column {spec.column} is NOT NULL; value null is not allowed")
    if isinstance(spec.value, (list, tuple, dict)):
        raise FieldBackfillError(f"{where}: value must be a single value (got {shown(spec.column, spec.value, table)})")

    params: dict[str, Any] = {"fb_value": _as_parameter(spec.value)}
    column = sql.Identifier(spec.column)
    # Only rows that still need the change: the filter, and the column not already at the value.
    if spec.value is None:
        needs_change = sql.SQL("{} IS NOT NULL").format(column)
    else:
        needs_change = sql.SQL("{} IS DISTINCT FROM {}").format(column, sql.Placeholder("fb_value"))
    conditions = [needs_change]
    filter_sql: sql.Composable | None = None
    filter_params: dict[str, Any] = {}
    if spec.filter is not None:
        filter_sql, filter_params = _filter_sql(spec.filter, columns, where, table)
        conditions.insert(0, filter_sql)
        params.update(filter_params)
    pending = sql.SQL(" AND ").join(sql.SQL("({})").format(c) for c in conditions)

    assignments = [sql.SQL("{} = {}").format(column, sql.Placeholder("fb_value"))]
    changed_columns = [spec.column]
    if "updated_at" in columns and spec.column != "updated_at":
        assignments.append(sql.SQL("updated_at = now()"))
        changed_columns.append("updated_at")
    set_clause = sql.SQL(", ").join(assignments)

    def apply(batch: Batch) -> int:
        return batch.update(set_clause, params, columns=changed_columns)

    plan = Plan(
        name=name or spec.checkpoint_name(), table=table, key=key_column, pending=pending, apply=apply,
        params={"table": f"{settings.HR_SCHEMA}.{table}", "column": spec.column, "value": spec.value,
                "filter": asdict(spec.filter) if spec.filter else None},
        bind=params,
    )
    _trial(conn, plan, spec, columns, set_clause, filter_sql, filter_params)
    return plan


def _trial(conn: psycopg.Connection, plan: Plan, spec: FieldSpec, columns: dict[str, ColumnInfo],
           set_clause: sql.Composable, filter_sql: sql.Composable | None, filter_params: dict[str, Any]) -> None:
    """Bind the value, then the filter values (PostgreSQL converts each to its column's type), then
    update one matching row (constraints); all in a transaction that is rolled back."""
    key = sql.Identifier(plan.key)
    stages: list[tuple[str, sql.Composable, dict[str, Any]]] = [
        ("value", sql.SQL("UPDATE {table} SET {column} = %(fb_value)s WHERE false").format(
            table=plan.table_sql, column=sql.Identifier(spec.column)), {"fb_value": plan.bind["fb_value"]}),
    ]
    if filter_sql is not None:
        stages.append(("filter", sql.SQL("SELECT 1 FROM {table} WHERE {filter} LIMIT 0").format(
            table=plan.table_sql, filter=filter_sql), filter_params))
    stages.append(("row", sql.SQL(
        "UPDATE {table} SET {set_clause} WHERE {key} = (SELECT {key} FROM {table} WHERE {pending} ORDER BY {key} LIMIT 1)"
    ).format(table=plan.table_sql, set_clause=set_clause, key=key, pending=plan.pending_sql), plan.bind))
    stage = "value"
    try:
        with local_transaction(conn, lock_timeout="1s", statement_timeout="5s", force_rollback=True):
            for stage, statement, params in stages:
                conn.execute(statement, params)
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.UndefinedFunction,
            psycopg.errors.DatatypeMismatch) as exc:
        raise FieldBackfillError(_describe_database_error(exc, spec, plan.table, columns, stage)) from exc
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        raise FieldBackfillError(
            f"field backfill of {plan.qualified_table}.{spec.column}: the trial update of one row timed out "
            f"({exc.diag.message_primary}); the table is busy, try again later. Nothing was changed.") from exc


def as_backfill(spec: FieldSpec, defaults: Options | None = None) -> Backfill:
    """An ad-hoc field backfill from run config (the `field_backfill` job), with its own checkpoint
    name; personal or pay columns only where the deployment allows them (HRMS_BACKFILL_SENSITIVE_COLUMNS)."""
    name = spec.checkpoint_name()
    table = normalize_table(spec.table)
    return Backfill(
        name=name, table=table, kind="field", defaults=defaults or Options(),
        description=f"set {spec.column} = {shown(spec.column, spec.value, table)} on {spec.table}",
        prepare=lambda conn: plan_field_backfill(conn, spec, name=name, sensitive_allowed=sensitive_columns_allowed()),
    )


def register(target: BackfillRegistry, name: str, *, spec: FieldSpec, description: str,
             defaults: Options | None = None) -> Backfill:
    """Register a declarative field backfill on `target` (validated against the live schema when it
    runs; code, so personal or pay columns are not limited)."""
    return target.add(Backfill(
        name=name, description=description, table=spec.table, defaults=defaults or Options(),
        prepare=lambda conn: plan_field_backfill(conn, spec, name=name), kind="field",
    ))
