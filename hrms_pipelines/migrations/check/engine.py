"""The analysis of one SQL file: parse it with PostgreSQL's own parser (pglast), walk its
statements while tracking transaction and timeout state, run the rules, apply suppressions.

Locations: pglast's JSON parse tree counts UTF-8 bytes, so the engine works in byte offsets and
turns them into 1-based line and (character) column only for findings.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field

from pglast import parser as pg_parser

from hrms_pipelines.migrations.check import rules as rule_registry
from hrms_pipelines.migrations.check.model import FileState, Finding, Rule, Severity, Statement
from hrms_pipelines.migrations.check.rules import _plpgsql, _sql

ALLOW = re.compile(r"--[ \t]*hrms:allow\b(?P<body>[^\n]*)")
ALLOW_BODY = re.compile(
    r"^\s*(?P<rules>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)\s*(?:reason:\s*(?P<reason>.*?))?\s*$", re.IGNORECASE
)

RUNNER_TRANSACTIONAL = "runner-transactional"
RUNNER_NON_TRANSACTIONAL = "runner-non-transactional"
STANDALONE = "standalone"


@dataclass
class Catalog:
    """What earlier migration files left behind, learned from their statements in run order."""

    partitioned: set[str] = field(default_factory=set)
    index_table: dict[str, str] = field(default_factory=dict)  # index name -> its table
    not_null_checks: set[tuple[str, str]] = field(default_factory=set)  # validated CHECK (col IS NOT NULL)


@dataclass
class Suppression:
    offset: int
    line: int
    rules: list[str]
    reason: str | None
    raw: str
    used: bool = False


@dataclass
class FileResult:
    path: str
    findings: list[Finding] = field(default_factory=list)
    suppressions: list[Suppression] = field(default_factory=list)
    header_end: int = 0  # byte offset of the first statement: comments before it are the header
    created_tables: set[str] = field(default_factory=set)  # tables this file creates
    statements: list[Statement] = field(default_factory=list)
    _lines: object = None

    def position(self, offset: int) -> tuple[int, int]:
        return self._lines(offset) if self._lines else (1, 1)


class _Lines:
    """Byte offset -> (line, column) in a file's text."""

    def __init__(self, text: str, encoded: bytes | None) -> None:
        self.text = text
        self.encoded = encoded  # None when the text is ASCII (bytes == characters)
        source = encoded if encoded is not None else text
        newline = b"\n" if encoded is not None else "\n"
        self.starts = [0]
        i = source.find(newline)
        while i != -1:
            self.starts.append(i + 1)
            i = source.find(newline, i + 1)

    def __call__(self, offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.starts, offset) - 1
        start = self.starts[index]
        if self.encoded is None:
            column = offset - start + 1
        else:
            column = len(self.encoded[start:offset].decode("utf-8", "replace")) + 1
        return index + 1, column

    def snippet(self, start: int, end: int) -> str:
        source = self.encoded if self.encoded is not None else self.text
        chunk = source[start:end]
        if self.encoded is not None:
            chunk = chunk.decode("utf-8", "replace")
        first = chunk.strip().split("\n", 1)[0].strip()
        return first[:160]

    def byte_offset(self, char_offset: int) -> int:
        return char_offset if self.encoded is None else len(self.text[:char_offset].encode("utf-8"))


def decode(data: bytes) -> tuple[str | None, str | None, int]:
    """(text, None, 0) or (None, problem, byte offset of the problem)."""
    try:
        return data.decode("utf-8-sig"), None, 0
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 ({exc.reason} at byte {exc.start}); save the file as UTF-8", exc.start


def _finding(result: FileResult, lines: _Lines | None, rule: Rule, offset: int, *, detail: str = "",
             severity: Severity | None = None, statement: Statement | None = None) -> Finding:
    line, column = lines(offset) if lines else (1, 1)
    message = rule.why + (f" {detail}" if detail else "")
    shown = ""
    if lines and statement:
        # a finding deep inside a statement (a line of a DO block) shows that line, not the statement's first
        start = offset if statement.start < offset < statement.end and lines(statement.start)[0] != line else statement.start
        shown = lines.snippet(start, statement.end)
    return Finding(
        path=result.path, line=line, column=column, rule=rule.id, severity=severity or rule.severity,
        message=message, fix=rule.fix, statement=shown, offset=offset,
    )


def analyze_text(
    path: str,
    data: bytes,
    *,
    mode: str,
    sizes,
    catalog: Catalog | None = None,
    new_tables: set[str] | None = None,
    down: bool = False,
    learn: bool = True,
) -> FileResult:
    """Findings of one file. `new_tables`: tables created by pending migrations before this one.
    `catalog` is read for what earlier files left behind and, with `learn`, extended by this file."""
    catalog = catalog if catalog is not None else Catalog()
    result = FileResult(path=path)
    registry = rule_registry.ALL
    text, problem, bad_byte = decode(data)
    if text is None:
        result.findings.append(Finding(
            path=path, line=data.count(b"\n", 0, bad_byte) + 1, column=bad_byte - (data.rfind(b"\n", 0, bad_byte) + 1) + 1,
            rule="invalid-encoding", severity=Severity.DANGER, message=f"{registry['invalid-encoding'].why} {problem}",
            fix=registry["invalid-encoding"].fix,
        ))
        return result
    encoded = None if text.isascii() else text.encode("utf-8")
    lines = _Lines(text, encoded)
    result._lines = lines
    try:
        tree = json.loads(pg_parser.parse_sql_json(text))
    except pg_parser.ParseError as exc:
        message, char_index = exc.args[0], (exc.args[1] if len(exc.args) > 1 else None)
        offset = lines.byte_offset(char_index) if isinstance(char_index, int) else len(encoded if encoded is not None else text)
        rule = registry["syntax-error"]
        result.findings.append(_finding(result, lines, rule, offset, detail=f"PostgreSQL's parser says: {message}."))
        result.suppressions = _suppressions(text, lines)
        return result

    size = len(encoded) if encoded is not None else len(text)
    statements = []
    for raw in tree.get("stmts", ()):
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0) or (size - start)
        kind, node = _sql.unwrap(raw["stmt"])
        statements.append(Statement(kind=kind, node=node, start=start, end=start + length))
    result.statements = statements
    result.header_end = statements[0].start if statements else size

    state = FileState(
        sizes=sizes, new_tables=set(new_tables or ()), catalog=catalog,
        in_transaction=mode == RUNNER_TRANSACTIONAL,
        lock_timeout=mode != STANDALONE, statement_timeout=mode != STANDALONE,
        runner_transaction=mode == RUNNER_TRANSACTIONAL, down=down,
    )
    dispatch = rule_registry.BY_NODE_TYPE
    everywhere = rule_registry.EVERY_STATEMENT
    for stmt in statements:
        if stmt.kind in rule_registry.WITH_BODIES:
            stmt.inner = _plpgsql.inner_statements(stmt, lines)
        for rule in (*dispatch.get(stmt.kind, ()), *everywhere):
            if down and not rule.in_down_files:
                continue
            for hit in rule.check(stmt, state):
                result.findings.append(_finding(result, lines, rule, hit.location, detail=hit.detail,
                                                severity=hit.severity, statement=stmt))
        if stmt.inner:
            _check_bodies(result, lines, stmt, state)
        _apply_effects(stmt, state, catalog, mode, learn)
    result.created_tables = state.new_tables - set(new_tables or ())
    if state.in_transaction and mode != RUNNER_TRANSACTIONAL and statements:
        rule = registry["ban-uncommitted-transaction"]
        last = statements[-1]
        result.findings.append(_finding(result, lines, rule, last.start, statement=last))
    result.suppressions = _suppressions(text, lines) if "hrms:allow" in text else []
    return result


def _check_bodies(result: FileResult, lines: _Lines, stmt: Statement, state: FileState) -> None:
    """The escalation rules over the statements inside a DO block or a function body, each finding at
    the line of the inner statement."""
    escalation = rule_registry.ESCALATION_BY_NODE_TYPE
    for inner in stmt.inner:
        end = inner.offset + len(inner.shown)
        for kind, node in inner.statements:
            nested = Statement(kind=kind, node=node, start=inner.offset, end=end)
            for rule in escalation.get(kind, ()):
                for hit in rule.check(nested, state):
                    how = "runs dynamic SQL that reads" if inner.dynamic else "runs"
                    detail = f"Inside the {inner.context}, which {how} `{inner.shown}`: {hit.detail}"
                    result.findings.append(_finding(result, lines, rule, inner.offset, detail=detail,
                                                    severity=hit.severity, statement=nested))


def _timeout_value(node: dict) -> bool:
    """False when the SET turns the timeout off (0), True otherwise."""
    args = node.get("args", ())
    if not args:
        return True
    const = args[0].get("A_Const", {})
    if "ival" in const:
        return bool(const["ival"].get("ival", 0))
    if "sval" in const:
        value = const["sval"].get("sval", "").strip()
        return value not in ("0", "") and not re.fullmatch(r"0+\s*(ms|s|min|h|d)?", value)
    return True


def _apply_effects(stmt: Statement, state: FileState, catalog: Catalog, mode: str, learn: bool) -> None:
    kind, node = stmt.kind, stmt.node
    if kind == "CreateStmt":
        table = _sql.relation(node.get("relation"))
        state.new_tables.add(table)
        if learn:
            if node.get("partspec"):
                catalog.partitioned.add(table)
            for element in node.get("tableElts", ()):
                if "Constraint" in element:
                    con = element["Constraint"]
                    column = con.get("contype") == "CONSTR_CHECK" and _sql.is_not_null_check(con.get("raw_expr"))
                    if column and not con.get("skip_validation"):
                        catalog.not_null_checks.add((table, column))
    elif kind == "CreateTableAsStmt":
        into = node.get("into", {}).get("IntoClause", node.get("into", {}))
        state.new_tables.add(_sql.relation(into.get("rel")))
    elif kind == "IndexStmt":
        name = node.get("idxname")
        if name:
            relation = node.get("relation", {})
            schema = relation.get("schemaname")
            table = _sql.relation(relation)
            state.indexes_created_here.add(name)
            if schema:
                state.indexes_created_here.add(f"{schema}.{name}")
            if learn:
                catalog.index_table[name] = table
                if schema:
                    catalog.index_table[f"{schema}.{name}"] = table
    elif kind == "RenameStmt" and node.get("renameType") == "OBJECT_TABLE":
        old = _sql.relation(node.get("relation"))
        schema = node.get("relation", {}).get("schemaname")
        new = f"{schema}.{node['newname']}" if schema else node["newname"]
        if state.is_new(old):
            state.new_tables.add(new)
    elif kind == "AlterTableStmt":
        table = _sql.relation(node.get("relation"))
        for cmd in _sql.alter_commands(node):
            subtype = cmd.get("subtype")
            if subtype == "AT_AddConstraint":
                con = cmd.get("def", {}).get("Constraint", {})
                name = con.get("conname")
                column = con.get("contype") == "CONSTR_CHECK" and _sql.is_not_null_check(con.get("raw_expr"))
                if con.get("skip_validation"):
                    if name:
                        if state.in_transaction:  # outside one, the statement commits by itself
                            state.not_valid_in_transaction.add((table, name))
                        if column:
                            state.pending_not_null[(table, name)] = column
                elif column:
                    state.validated_here.add((table, column))
                    if learn:
                        catalog.not_null_checks.add((table, column))
            elif subtype == "AT_ValidateConstraint":
                column = state.pending_not_null.get((table, cmd.get("name")))
                if column:
                    state.validated_here.add((table, column))
                    if learn:
                        catalog.not_null_checks.add((table, column))
                else:
                    state.validated_elsewhere.add(table)
    elif kind == "TransactionStmt":
        tx = node.get("kind")
        if tx in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
            if not state.in_transaction:
                state.not_valid_in_transaction.clear()
            state.in_transaction = True
        elif tx in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_PREPARE"):
            state.in_transaction = False
            state.not_valid_in_transaction.clear()
    elif kind == "VariableSetStmt" and mode != RUNNER_NON_TRANSACTIONAL:
        # In a non-transactional file the runner sets both timeouts again before every statement.
        if node.get("is_local") and not state.in_transaction:
            return  # SET LOCAL outside a transaction does nothing
        var_kind, name = node.get("kind"), node.get("name")
        if var_kind == "VAR_RESET_ALL":
            state.lock_timeout = state.statement_timeout = False
        elif name in ("lock_timeout", "statement_timeout"):
            value = var_kind == "VAR_SET_VALUE" and _timeout_value(node)
            setattr(state, name, value)


def _suppressions(text: str, lines: _Lines) -> list[Suppression]:
    found = []
    for match in ALLOW.finditer(text):
        offset = lines.byte_offset(match.start())
        body = ALLOW_BODY.match(match["body"])
        rules = re.split(r"\s*,\s*", body["rules"].strip().lower()) if body else []
        reason = (body["reason"] or "").strip() if body else ""
        found.append(Suppression(offset=offset, line=lines(offset)[0], rules=rules, reason=reason or None,
                                 raw=match.group(0).strip()))
    return found


def _owner(result: FileResult, offset: int) -> int | None:
    """Index of the statement an `-- hrms:allow` comment at `offset` belongs to: the statement it
    sits in, else the one ending earlier on the same line, else the next one; -1 for the file
    header (comments before the first statement also cover findings about the whole file)."""
    statements = result.statements
    source = result._lines.encoded if result._lines.encoded is not None else result._lines.text
    newline = b"\n" if isinstance(source, bytes) else "\n"
    for index, stmt in enumerate(statements):
        if stmt.start <= offset < stmt.end + 1:
            return index
        if stmt.end <= offset and newline not in source[stmt.end:offset]:
            if index + 1 == len(statements) or offset < statements[index + 1].start:
                return index
        if offset < stmt.start:
            return index
    return None


def finalize(result: FileResult, *, file_findings: list[Finding] = (), report_unused: bool = True) -> FileResult:
    """Add findings about the whole file (e.g. no down file), then apply the suppressions:
    one with a reason suppresses the named rules' findings on its statement; one without a
    reason, naming an unknown rule, or suppressing nothing is itself reported.

    `report_unused=False` when a database's ledger made the tables of pending migrations new:
    findings written for the no-database view (every earlier migration applied) may then not
    arise, and their suppressions are not unused."""
    registry = rule_registry.ALL
    result.findings.extend(file_findings)
    unparsed = any(f.rule in ("syntax-error", "invalid-encoding") for f in result.findings)  # nothing was checked
    extra: list[Finding] = []
    for sup in result.suppressions:
        index = _owner(result, sup.offset)
        line, column = result.position(sup.offset)
        unknown = [r for r in sup.rules if r not in registry]
        if not sup.rules or unknown:
            what = f"unknown rule {', '.join(unknown)}" if unknown else "no rule id"
            extra.append(_suppression_finding(result, "unused-suppression", line, column, sup,
                                              f"`{sup.raw}` names {what}; rule ids: `python -m hrms_pipelines.migrations.check --rules`."))
            continue
        escalations = [r for r in sup.rules if registry[r].escalation]
        if escalations:  # never allowed from inside the file under review
            extra.append(_suppression_finding(
                result, "suppressed-escalation", line, column, sup,
                f"`{sup.raw}` tries to allow {', '.join(escalations)}; ignored, the finding stays DANGER."))
            if len(escalations) == len(sup.rules):
                continue
        if sup.reason is None:
            extra.append(_suppression_finding(result, "suppression-without-reason", line, column, sup,
                                              f"`{sup.raw}` has no `reason: <text>`, so it suppresses nothing."))
            continue
        for finding in result.findings:
            if finding.rule not in sup.rules or finding.suppressed is not None or finding.rule in escalations:
                continue
            if finding.offset is None:  # about the whole file: suppressed from the header
                applies = sup.offset < result.header_end
            else:
                applies = index is not None and _owner(result, finding.offset) == index
            if applies:
                finding.suppressed = sup.reason
                sup.used = True
        traced_only = all(registry[r].found_by_trace for r in sup.rules)  # trace mode judges those
        if not sup.used and report_unused and not unparsed and not traced_only:
            extra.append(_suppression_finding(result, "unused-suppression", line, column, sup,
                                              f"`{sup.raw}` suppresses nothing here: no {', '.join(sup.rules)} finding on this statement."))
    result.findings.extend(extra)
    result.findings.sort(key=lambda f: (f.line, f.column, f.rule))
    return result


def suppression_reason(result: FileResult, rule_id: str, offset: int) -> str | None:
    """The reason of a suppression with a reason that names `rule_id` on the statement at byte
    `offset` (trace mode's findings are suppressed like the analyzer's own)."""
    index = _owner(result, offset)
    for sup in result.suppressions:
        if rule_id in sup.rules and sup.reason and index is not None and _owner(result, sup.offset) == index:
            sup.used = True
            return sup.reason
    return None


def _suppression_finding(result: FileResult, rule_id: str, line: int, column: int, sup: Suppression, detail: str) -> Finding:
    rule = rule_registry.ALL[rule_id]
    return Finding(path=result.path, line=line, column=column, rule=rule.id, severity=rule.severity,
                   message=f"{rule.why} {detail}", fix=rule.fix, statement=sup.raw)
