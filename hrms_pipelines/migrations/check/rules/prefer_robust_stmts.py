"""squawk's prefer-robust-stmts: outside a transaction, each statement commits on its own, so a file
that fails half way is re-run over half-done work; every statement must be safe to run twice."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql

IF_EXISTS = "Missing IF EXISTS"
IF_NOT_EXISTS = "Missing IF NOT EXISTS"
NO_TRANSACTION = "Runs outside a transaction and cannot say IF [NOT] EXISTS"
TABLE_RENAMES = {"OBJECT_TABLE", "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT"}


def _alter_table(stmt, state):
    """(what is missing, location) for each ALTER TABLE action a re-run would fail on."""
    for cmd in _sql.alter_commands(stmt.node):
        subtype, definition = cmd.get("subtype"), cmd.get("def", {})
        where = _sql.location(definition.get("ColumnDef"), definition.get("Constraint"), default=stmt.start)
        if subtype == "AT_DropConstraint":
            state.dropped_constraints[cmd.get("name")] = False
            if not cmd.get("missing_ok"):
                yield IF_EXISTS, where
        elif subtype in ("AT_AddColumn", "AT_DropColumn"):
            if not cmd.get("missing_ok"):
                yield (IF_NOT_EXISTS if subtype == "AT_AddColumn" else IF_EXISTS), where
        elif subtype == "AT_ValidateConstraint":
            if cmd.get("name") not in state.dropped_constraints:
                yield NO_TRANSACTION, where
        elif subtype == "AT_AddConstraint":
            name = definition.get("Constraint", {}).get("conname")
            if state.dropped_constraints.get(name) is False:  # dropped IF EXISTS just before: a re-run works
                state.dropped_constraints[name] = True
            else:
                yield NO_TRANSACTION, where
        else:
            yield NO_TRANSACTION, where


def _missing(stmt, state):
    node, kind = stmt.node, stmt.kind
    if kind == "AlterTableStmt" and node.get("objtype") == "OBJECT_TABLE":
        yield from _alter_table(stmt, state)
    elif kind == "RenameStmt" and node.get("renameType") in TABLE_RENAMES and node.get("relationType", "OBJECT_TABLE") == "OBJECT_TABLE":
        yield NO_TRANSACTION, stmt.start
    elif kind == "AlterObjectSchemaStmt" and node.get("objectType") == "OBJECT_TABLE":
        yield NO_TRANSACTION, stmt.start
    elif kind == "IndexStmt":
        # CONCURRENTLY commits in steps even inside a file's transaction... where it fails anyway
        if node.get("idxname") and not node.get("if_not_exists") and (node.get("concurrent") or not state.in_transaction):
            yield IF_NOT_EXISTS, stmt.start
    elif kind == "CreateStmt":
        relation = node.get("relation", {})
        temporary_for_the_transaction = relation.get("relpersistence") == "t" and node.get("oncommit") == "ONCOMMIT_DROP"
        if not node.get("if_not_exists") and not temporary_for_the_transaction:
            yield IF_NOT_EXISTS, stmt.start
    elif kind == "DropStmt" and node.get("removeType") in ("OBJECT_INDEX", "OBJECT_TABLE", "OBJECT_TYPE"):
        if not node.get("missing_ok"):
            yield IF_EXISTS, stmt.start


def check(stmt, state):
    for what, location in _missing(stmt, state):
        concurrent_index = stmt.kind == "IndexStmt" and stmt.node.get("concurrent")
        if state.in_transaction and not concurrent_index:
            continue
        yield Hit(location, f"{what}: a re-run after a failure part way through this file fails here.")


RULE = Rule(
    id="prefer-robust-stmts",
    severity=Severity.WARNING,
    squawk="prefer-robust-stmts",
    why="Outside a transaction (a `-- hrms:non-transactional` migration, a script) every statement commits on "
        "its own; when the file fails part way, the runner runs it again from the top, and a statement that "
        "already ran then fails (the index exists, the column exists) or does something twice.",
    fix="Write statements a re-run survives: CREATE INDEX CONCURRENTLY IF NOT EXISTS, DROP INDEX CONCURRENTLY "
        "IF EXISTS, ADD COLUMN IF NOT EXISTS, DROP CONSTRAINT IF EXISTS before ADD CONSTRAINT; or put the "
        "rest in a transactional migration.",
    bad="-- hrms:non-transactional\nCREATE INDEX CONCURRENTLY payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
    good="-- hrms:non-transactional\n"
         "CREATE INDEX CONCURRENTLY IF NOT EXISTS payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
    node_types=("AlterTableStmt", "RenameStmt", "AlterObjectSchemaStmt", "IndexStmt", "CreateStmt", "DropStmt"),
    check=check,
    in_down_files=True,
)
