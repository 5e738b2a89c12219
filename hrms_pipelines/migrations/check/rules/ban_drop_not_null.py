from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    if state.is_new(table):
        return
    for cmd in _sql.alter_commands(stmt.node):
        if cmd.get("subtype") == "AT_DropNotNull":
            yield Hit(stmt.start, f"Column {cmd.get('name')} of {table}.")


RULE = Rule(
    id="ban-drop-not-null",
    severity=Severity.WARNING,
    squawk="ban-drop-not-null",
    why="Dropping NOT NULL lets NULLs in that running code (and reports, and imports) do not expect.",
    fix="Make sure every reader handles NULL first; then suppress with "
        "`-- hrms:allow ban-drop-not-null reason: <why>`.",
    bad="ALTER TABLE hrms.employees_employee ALTER COLUMN email DROP NOT NULL;\n",
    good="ALTER TABLE hrms.employees_employee ALTER COLUMN job_title SET DEFAULT 'unknown';\n",
    node_types=("AlterTableStmt",),
    check=check,
)
