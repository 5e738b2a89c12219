"""SQL inside SQL: the statements a DO block or a function body runs, for the escalation rules.

A `DO $$ ... $$` block runs during the migration with the migrator's rights, and a function body
runs later with its owner's (SECURITY DEFINER) or its caller's. Either can hold any statement the
analyzer bans at the top level, written as plain SQL or built as a string and run with EXECUTE.

Static statements (PL/pgSQL's own SQL statements, a LANGUAGE sql body) are parsed as they are. A
dynamic statement is reconstructed when its text is built from constants the analyzer can read:

- a string literal: `EXECUTE 'GRANT ...'`;
- `format('<template>', ...)`: `%I` becomes an identifier, `%L` a literal, `%s` the argument when
  it is a constant, else RUNTIME_VALUE;
- concatenations `'...' || var || '...'`, `quote_ident(...)`, `quote_literal(...)`: variables become
  RUNTIME_VALUE.

What cannot be reconstructed (a variable holding the whole statement, a template that does not parse
once its values are stand-ins) is opaque: the dynamic-sql rule says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pglast import parser as pg_parser

# Stand-ins for what only exists at run time. A rule that meets RUNTIME_VALUE where a privilege's
# grantee goes cannot rule out PUBLIC.
RUNTIME_VALUE = "hrms_runtime_value"
RUNTIME_IDENT = "hrms_runtime_ident"
RUNTIME_LITERAL = "'hrms_runtime_literal'"

_FORMAT_SPEC = re.compile(r"%(?:(\d+)\$)?-?(?:\d+|\*(?:\d+\$)?)?([sIL%])")


@dataclass
class Inner:
    """One statement found inside a DO block or a function body."""

    offset: int  # byte offset in the file: the first character of the statement's line
    context: str  # "DO block", "function hrms.f", ...
    dynamic: bool  # built as a string and run with EXECUTE
    sql: str | None  # the statement's text (dynamic: reconstructed); None when opaque
    shown: str  # how the statement reads in the source (for messages)
    statements: list = field(default_factory=list)  # [(kind, node)] parsed from `sql`; empty when it does not parse


# ------------------------------------------------------------------------------------------------
# Where the body is


def _body_option(node: dict, key: str) -> dict | None:
    for item in node.get(key, ()):
        option = item.get("DefElem", {})
        if option.get("defname") == "as":
            return option
    return None


def _language(node: dict, key: str) -> str:
    for item in node.get(key, ()):
        option = item.get("DefElem", {})
        if option.get("defname") == "language":
            return option.get("arg", {}).get("String", {}).get("sval", "").lower()
    return "plpgsql" if key == "args" else "sql"


def _body(stmt) -> tuple[str, str, int] | None:
    """(language, body text, byte offset of the literal holding it) of a DO block or a function."""
    key = "args" if stmt.kind == "DoStmt" else "options"
    option = _body_option(stmt.node, key)
    if option is None:
        return None
    arg = option.get("arg", {})
    if "String" in arg:
        body = arg["String"]["sval"]
    else:
        items = arg.get("List", {}).get("items", ())
        if len(items) != 1 or "String" not in items[0]:
            return None  # C functions: AS 'obj_file', 'link_symbol'
        body = items[0]["String"]["sval"]
    location = option.get("arg_location", -1)
    if location is None or location < 0:
        location = option.get("location", stmt.start)
    return _language(stmt.node, key), body, location


def _line_offset(lines, line: int) -> int:
    """Byte offset of the first non-blank character of a 1-based file line."""
    starts = lines.starts
    start = starts[min(line, len(starts)) - 1]
    source = lines.encoded if lines.encoded is not None else lines.text
    end = starts[line] if line < len(starts) else len(source)
    chunk = source[start:end]
    stripped = chunk.lstrip(b" \t" if isinstance(chunk, bytes) else " \t")
    return start + (len(chunk) - len(stripped))


# ------------------------------------------------------------------------------------------------
# Reconstructing dynamic SQL


def _expression(text: str) -> dict | None:
    try:
        tree = json.loads(pg_parser.parse_sql_json(f"SELECT {text}"))
        return tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]
    except (pg_parser.ParseError, KeyError, IndexError):
        return None


def _constant(expr: dict) -> str | None:
    if "A_Const" in expr and "sval" in expr["A_Const"]:
        return expr["A_Const"]["sval"].get("sval", "")
    if "TypeCast" in expr:
        return _constant(expr["TypeCast"].get("arg", {}))
    return None


def _function(expr: dict) -> tuple[str, list[dict]] | None:
    call = expr.get("FuncCall")
    if not call:
        return None
    names = [n["String"]["sval"] for n in call.get("funcname", ()) if "String" in n]
    return (names[-1].lower() if names else ""), call.get("args", [])


def _format(template: str, args: list[dict]) -> str:
    position = 0

    def replace(match: re.Match) -> str:
        nonlocal position
        explicit, kind = match.group(1), match.group(2)
        if kind == "%":
            return "%"
        index = int(explicit) - 1 if explicit else position
        position = index + 1
        if kind == "I":
            return RUNTIME_IDENT
        if kind == "L":
            return RUNTIME_LITERAL
        value = _constant(args[index]) if index < len(args) else None
        return value if value is not None else RUNTIME_VALUE

    return _FORMAT_SPEC.sub(replace, template)


def reconstruct(expr: dict | None) -> str | None:
    """The text of a string expression with run-time values as stand-ins; None when the expression
    is not built from parts the analyzer can read (a variable holding the whole statement)."""
    if not expr:
        return None
    constant = _constant(expr)
    if constant is not None:
        return constant
    if "TypeCast" in expr:
        return reconstruct(expr["TypeCast"].get("arg"))
    if "A_Expr" in expr:
        body = expr["A_Expr"]
        if [n.get("String", {}).get("sval") for n in body.get("name", ())] == ["||"]:
            left, right = _part(body.get("lexpr")), _part(body.get("rexpr"))
            return None if left is None or right is None else left + right
        return None
    function = _function(expr)
    if function:
        name, args = function
        if name == "format" and args and _constant(args[0]) is not None:
            return _format(_constant(args[0]), args[1:])
        if name == "concat":
            parts = [_part(a) for a in args]
            return None if any(p is None for p in parts) else "".join(parts)
    return None


def _part(expr: dict | None) -> str | None:
    """A piece of a concatenation: like `reconstruct`, but a variable is a run-time value."""
    if not expr:
        return None
    if "ColumnRef" in expr or "ParamRef" in expr:
        return RUNTIME_VALUE
    function = _function(expr)
    if function and function[0] == "quote_ident":
        return RUNTIME_IDENT
    if function and function[0] in ("quote_literal", "quote_nullable"):
        return RUNTIME_LITERAL
    return reconstruct(expr)


def _parse(sql: str) -> list[tuple[str, dict]]:
    try:
        tree = json.loads(pg_parser.parse_sql_json(sql))
    except pg_parser.ParseError:
        return []
    out = []
    for raw in tree.get("stmts", ()):
        ((kind, node),) = raw["stmt"].items()
        out.append((kind, node))
    return out


# ------------------------------------------------------------------------------------------------
# Walking a PL/pgSQL body

_DYNAMIC = {"PLpgSQL_stmt_dynexecute": "query", "PLpgSQL_stmt_dynfors": "query",
            "PLpgSQL_stmt_return_query": "dynquery", "PLpgSQL_stmt_open": "dynquery"}


def _walk(node, found: list) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, found)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "PLpgSQL_stmt_execsql":
            query = value.get("sqlstmt", {}).get("PLpgSQL_expr", {}).get("query")
            if query:
                found.append((value.get("lineno", 1), False, query))
        elif key in _DYNAMIC and isinstance(value, dict) and _DYNAMIC[key] in value:
            query = value[_DYNAMIC[key]].get("PLpgSQL_expr", {}).get("query")
            if query:
                found.append((value.get("lineno", 1), True, query))
        _walk(value, found)


def _plpgsql_statements(stmt, body: str, source) -> list[tuple[int, bool, str]] | None:
    if stmt.kind == "DoStmt":
        tag = "$hrms_do$"
        while tag in body:
            tag = tag[:-1] + "_$"
        wrapper = f"CREATE FUNCTION pg_temp.hrms_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
    else:
        wrapper = source[stmt.start:stmt.end]
        wrapper = wrapper.decode("utf-8", "replace") if isinstance(wrapper, bytes) else wrapper
    try:
        tree = json.loads(pg_parser.parse_plpgsql_json(wrapper))
    except (pg_parser.ParseError, ValueError):
        return None  # PostgreSQL will refuse the body itself
    found: list = []
    _walk(tree, found)
    return found


def context_of(stmt) -> str:
    if stmt.kind == "DoStmt":
        return "DO block"
    names = [n["String"]["sval"] for n in stmt.node.get("funcname", ()) if "String" in n]
    kind = "procedure" if stmt.node.get("is_procedure") else "function"
    return f"{kind} {'.'.join(names)}"


def inner_statements(stmt, lines) -> list[Inner]:
    """Every statement a DO block or a function body holds, with where it sits in the file."""
    found = _body(stmt)
    if found is None:
        return []
    language, body, literal_offset = found
    source = lines.encoded if lines.encoded is not None else lines.text
    first_line = lines(literal_offset)[0]  # the body's line 1 is the line its literal starts on
    context = context_of(stmt)
    out: list[Inner] = []
    if language == "sql":
        for piece in _split(body):
            line = first_line + body[:piece[0]].count("\n")
            text = piece[1]
            out.append(Inner(offset=_line_offset(lines, line), context=context, dynamic=False, sql=text,
                             shown=_shown(text), statements=_parse(text)))
        return out
    if language != "plpgsql":
        return []
    for lineno, dynamic, query in _plpgsql_statements(stmt, body, source) or ():
        offset = _line_offset(lines, first_line + lineno - 1)
        if not dynamic:
            out.append(Inner(offset=offset, context=context, dynamic=False, sql=query, shown=_shown(query),
                             statements=_parse(query)))
            continue
        text = reconstruct(_expression(query))
        statements = _parse(text) if text is not None else []
        out.append(Inner(offset=offset, context=context, dynamic=True, sql=text if statements else None,
                         shown=_shown("EXECUTE " + query), statements=statements))
    return out


def _split(body: str) -> list[tuple[int, str]]:
    try:
        return [(s.start, body[s]) for s in pg_parser.split(body, with_parser=True, only_slices=True)]
    except pg_parser.ParseError:
        return []


def _shown(text: str) -> str:
    first = " ".join(text.split())
    return first[:120] + ("…" if len(first) > 120 else "")


def is_security_definer(stmt) -> bool:
    return stmt.kind == "CreateFunctionStmt" and any(
        o.get("DefElem", {}).get("defname") == "security"
        and o["DefElem"].get("arg", {}).get("Boolean", {}).get("boolval")
        for o in stmt.node.get("options", ()))
