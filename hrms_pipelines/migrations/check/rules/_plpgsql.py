"""SQL inside SQL: the statements a DO block or a function body runs, for the escalation rules.

A `DO $$ ... $$` block runs during the migration with the migrator's rights, and a function body
runs later with its owner's (SECURITY DEFINER) or its caller's. Either can hold any statement the
analyzer bans at the top level, written as plain SQL or built as a string and run with EXECUTE.

Static statements (PL/pgSQL's own SQL statements, a LANGUAGE sql body) are parsed as they are. A
dynamic statement is reconstructed when its text is built from constants the analyzer can read:

- a string literal: `EXECUTE 'GRANT ...'`;
- `format('<template>', ...)`: `%I` becomes an identifier, `%L` a literal, `%s` the argument when
  it is a constant, RUNTIME_IDENT when it is a variable declared with a type whose text cannot
  change the statement (regclass, an integer: SAFE_TYPES), else RUNTIME_VALUE;
- concatenations `'...' || var || '...'`, `concat(...)`, `quote_ident(...)`, `quote_literal(...)`:
  variables become RUNTIME_VALUE (or RUNTIME_IDENT, typed as above).

RUNTIME_VALUE in a reconstructed statement is text spliced in raw at run time: it may be any SQL. What
cannot be reconstructed at all (a variable holding the whole statement, `convert_from(decode(...))`,
a template that does not parse once its values are stand-ins) is opaque. The dynamic-sql rule
refuses both.
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

# Variables of these types print as a quoted name or a number: spliced in with `%s` or `||`, they
# cannot turn into another statement. Each with the stand-in the reconstructed statement gets.
_NAME_TYPES = ("regclass", "regproc", "regprocedure", "regnamespace", "regrole", "regtype", "regoper", "regoperator",
               "regcollation", "regconfig", "regdictionary")
_NUMBER_TYPES = ("oid", "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "numeric")
SAFE_TYPES = {**dict.fromkeys(_NAME_TYPES, "hrms_runtime_ident"), **dict.fromkeys(_NUMBER_TYPES, "0"),
              "bool": "true", "boolean": "true"}
# A text loop variable filled only by `FOR v IN SELECT f(...) ...` where f returns a name PostgreSQL has
# quoted itself is as safe as a regclass.
QUOTING_FUNCTIONS = frozenset({"quote_ident", "pg_get_serial_sequence"})

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
    spliced: bool = False  # dynamic: raw run-time text (`%s` or `||` of a variable) spliced into the statement


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


def _variable(expr: dict) -> str | None:
    fields = expr.get("ColumnRef", {}).get("fields", ())
    if len(fields) == 1 and "String" in fields[0]:
        return fields[0]["String"]["sval"]
    return None


def _runtime(expr: dict | None, safe: dict[str, str]) -> str:
    """The stand-in for a value only known at run time: a name or a number for a variable of a safe type."""
    name = _variable(expr or {})
    return safe.get(name, RUNTIME_VALUE) if name is not None else RUNTIME_VALUE


def _format(template: str, args: list[dict], safe: dict[str, str]) -> str:
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
        return value if value is not None else _runtime(args[index] if index < len(args) else None, safe)

    return _FORMAT_SPEC.sub(replace, template)


def reconstruct(expr: dict | None, safe: dict[str, str] | None = None) -> str | None:
    """The text of a string expression with run-time values as stand-ins; None when the expression
    is not built from parts the analyzer can read (a variable holding the whole statement). `safe`:
    the variables declared with a SAFE_TYPES type, with their stand-in."""
    safe = safe or {}
    if not expr:
        return None
    constant = _constant(expr)
    if constant is not None:
        return constant
    if "TypeCast" in expr:
        return reconstruct(expr["TypeCast"].get("arg"), safe)
    if "A_Expr" in expr:
        body = expr["A_Expr"]
        if [n.get("String", {}).get("sval") for n in body.get("name", ())] == ["||"]:
            left, right = _part(body.get("lexpr"), safe), _part(body.get("rexpr"), safe)
            return None if left is None or right is None else left + right
        return None
    function = _function(expr)
    if function:
        name, args = function
        if name == "format" and args and _constant(args[0]) is not None:
            return _format(_constant(args[0]), args[1:], safe)
        if name == "concat":
            parts = [_part(a, safe) for a in args]
            return None if any(p is None for p in parts) else "".join(parts)
    return None


def _part(expr: dict | None, safe: dict[str, str] | None = None) -> str | None:
    """A piece of a concatenation: like `reconstruct`, but a variable is a run-time value."""
    safe = safe or {}
    if not expr:
        return None
    if "ColumnRef" in expr or "ParamRef" in expr:
        return _runtime(expr, safe)
    function = _function(expr)
    if function and function[0] == "quote_ident":
        return RUNTIME_IDENT
    if function and function[0] in ("quote_literal", "quote_nullable"):
        return RUNTIME_LITERAL
    return reconstruct(expr, safe)


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
        elif key in ("PLpgSQL_stmt_perform", "PLpgSQL_stmt_assign") and isinstance(value, dict):
            # PERFORM f(...) / v := f(...): a function call is a statement too (set_config, ...)
            query = value.get("expr", {}).get("PLpgSQL_expr", {}).get("query", "")
            if key == "PLpgSQL_stmt_assign":
                query = "SELECT " + query.split(":=", 1)[-1] if ":=" in query else ""
            if query:
                found.append((value.get("lineno", 1), False, query))
        elif key in _DYNAMIC and isinstance(value, dict) and _DYNAMIC[key] in value:
            query = value[_DYNAMIC[key]].get("PLpgSQL_expr", {}).get("query")
            if query:
                found.append((value.get("lineno", 1), True, query))
        _walk(value, found)


def _nodes(node, key: str):
    """Every value under `key` anywhere in a parse tree."""
    if isinstance(node, list):
        for item in node:
            yield from _nodes(item, key)
    elif isinstance(node, dict):
        for k, value in node.items():
            if k == key:
                yield value
            yield from _nodes(value, key)


def _quoting_format(name: str, args: list[dict]) -> bool:
    """format('<template>', ...) whose template quotes every value (%I, %L): its result is names and literals."""
    template = _constant(args[0]) if name == "format" and args else None
    return template is not None and all(m.group(2) in "IL%" for m in _FORMAT_SPEC.finditer(template)) \
        and not _FORMAT_SPEC.sub("", template).strip(". ")


def _quoting_loops(tree) -> dict[int, bool]:
    """varno -> whether every FOR loop filling that variable selects one quoting function's result."""
    out: dict[int, bool] = {}
    for loop in _nodes(tree, "PLpgSQL_stmt_fors"):
        fields = loop.get("var", {}).get("PLpgSQL_row", {}).get("fields", ())
        query = loop.get("query", {}).get("PLpgSQL_expr", {}).get("query", "")
        quoted = False
        parsed = _parse(query)
        if len(fields) == 1 and len(parsed) == 1 and parsed[0][0] == "SelectStmt":
            targets = parsed[0][1].get("targetList", ())
            if len(targets) == 1:
                function = _function(targets[0].get("ResTarget", {}).get("val", {}))
                quoted = bool(function) and (function[0] in QUOTING_FUNCTIONS or _quoting_format(*function))
        for f in fields:
            out[f["varno"]] = out.get(f["varno"], True) and quoted
    return out


def _safe_variables(tree) -> dict[str, str]:
    """The variables of a PL/pgSQL function whose text cannot change a statement it is spliced into
    (declared with a SAFE_TYPES type, or a text only ever filled by a quoting loop), with their stand-in."""
    safe: dict[str, str] = {}
    loops = _quoting_loops(tree)
    assigned = {a.get("varno") for a in _nodes(tree, "PLpgSQL_stmt_assign")}
    for function in tree if isinstance(tree, list) else [tree]:
        for varno, datum in enumerate(function.get("PLpgSQL_function", {}).get("datums", ())):
            var = datum.get("PLpgSQL_var")
            if not var:
                continue
            typname = var.get("datatype", {}).get("PLpgSQL_type", {}).get("typname", "").lower()
            if typname in SAFE_TYPES:
                safe[var.get("refname", "")] = SAFE_TYPES[typname]
            elif loops.get(varno) and varno not in assigned and "default_val" not in var:
                safe[var.get("refname", "")] = RUNTIME_IDENT
    return safe


def _plpgsql_statements(stmt, body: str, source) -> tuple[list[tuple[int, bool, str]], dict[str, str]] | None:
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
    return found, _safe_variables(tree)


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
    found, safe = _plpgsql_statements(stmt, body, source) or ([], {})
    for lineno, dynamic, query in found:
        offset = _line_offset(lines, first_line + lineno - 1)
        if not dynamic:
            out.append(Inner(offset=offset, context=context, dynamic=False, sql=query, shown=_shown(query),
                             statements=_parse(query)))
            continue
        text = reconstruct(_expression(query), safe)
        statements = _parse(text) if text is not None else []
        out.append(Inner(offset=offset, context=context, dynamic=True, sql=text if statements else None,
                         shown=_shown("EXECUTE " + query), statements=statements,
                         spliced=text is not None and RUNTIME_VALUE in text))
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
