"""Helpers over pglast's JSON parse tree (a dict per node, `{"NodeType": {...fields}}`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


def unwrap(node: dict) -> tuple[str, dict]:
    """`{"Constraint": {...}}` -> ("Constraint", {...})."""
    ((kind, body),) = node.items()
    return kind, body


def relation(rangevar: dict | None) -> str:
    """`schema.table` (or `table` when unqualified), lower case as PostgreSQL folds it."""
    if not rangevar:
        return ""
    name = rangevar.get("relname", "")
    schema = rangevar.get("schemaname")
    return f"{schema}.{name}" if schema else name


def names(items: list[dict]) -> str:
    """A dotted name from a list of String nodes."""
    return ".".join(item["String"]["sval"] for item in items if "String" in item)


def alter_commands(stmt: dict) -> list[dict]:
    return [cmd["AlterTableCmd"] for cmd in stmt.get("cmds", ()) if "AlterTableCmd" in cmd]


def column_constraints(column_def: dict) -> list[dict]:
    return [c["Constraint"] for c in column_def.get("constraints", ()) if "Constraint" in c]


def added_columns(stmt: dict):
    """Every column definition an ALTER TABLE adds (`ADD COLUMN ...`)."""
    for cmd in alter_commands(stmt):
        if cmd.get("subtype") == "AT_AddColumn":
            yield cmd.get("def", {}).get("ColumnDef", {})


def added_constraints(stmt: dict):
    """Every constraint an ALTER TABLE adds, as (command, constraint): `ADD CONSTRAINT ...` and the
    ones written inline in `ADD COLUMN ... REFERENCES / CHECK / UNIQUE / PRIMARY KEY`."""
    for cmd in alter_commands(stmt):
        subtype = cmd.get("subtype")
        if subtype == "AT_AddConstraint":
            yield cmd, cmd.get("def", {}).get("Constraint", {})
        elif subtype == "AT_AddColumn":
            for con in column_constraints(cmd.get("def", {}).get("ColumnDef", {})):
                yield cmd, con


def location(*nodes: dict | None, default: int) -> int:
    """The first real location among the nodes (pglast's -1 / absent means unknown)."""
    for node in nodes:
        if node:
            loc = node.get("location", -1)
            if loc is not None and loc >= 0:
                return loc
    return default


@cache
def _non_volatile() -> frozenset[str]:
    text = (Path(__file__).with_name("non_volatile_functions.txt")).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def is_constant(expr: dict | None) -> bool:
    """True when a DEFAULT expression is a constant or built from non-VOLATILE built-in functions
    (PostgreSQL 11+ then stores it once instead of rewriting the table). Anything unknown, a
    user-defined function included, counts as volatile."""
    if expr is None:
        return True
    kind, body = unwrap(expr)
    if kind in ("A_Const", "SQLValueFunction"):  # literals; CURRENT_DATE, CURRENT_TIMESTAMP, ...
        return True
    if kind == "TypeCast":
        return is_constant(body.get("arg"))
    if kind == "CollateClause":
        return is_constant(body.get("arg"))
    if kind == "A_ArrayExpr":
        return all(is_constant(e) for e in body.get("elements", ()))
    if kind == "A_Expr":
        return is_constant(body.get("lexpr")) and is_constant(body.get("rexpr"))
    if kind == "BoolExpr":
        return all(is_constant(a) for a in body.get("args", ()))
    if kind == "FuncCall":
        funcname = [n["String"]["sval"] for n in body.get("funcname", ()) if "String" in n]
        schema_ok = len(funcname) == 1 or funcname[0] == "pg_catalog"
        return schema_ok and funcname[-1] in _non_volatile() and all(is_constant(a) for a in body.get("args", ()))
    return False


def is_not_null_check(expr: dict | None) -> str | None:
    """The column of a `CHECK (col IS NOT NULL)` expression, else None."""
    if not expr or "NullTest" not in expr:
        return None
    test = expr["NullTest"]
    if test.get("nulltesttype") != "IS_NOT_NULL":
        return None
    arg = test.get("arg", {})
    if "ColumnRef" not in arg:
        return None
    return names(arg["ColumnRef"].get("fields", ()))
