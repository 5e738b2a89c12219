from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    if state.is_new(table):
        return
    for cmd in _sql.alter_commands(stmt.node):
        if cmd.get("subtype") == "AT_DropColumn":
            yield Hit(stmt.start, f"Column {cmd.get('name')} of {state.size_note(table)}.")


RULE = Rule(
    id="ban-drop-column",
    severity=Severity.DANGER,
    squawk="ban-drop-column",
    why="DROP COLUMN loses the column's data for good (no down file can bring it back) and breaks "
        "every running release that still reads or writes it.",
    fix="Contract in steps: deploy code that no longer uses the column, wait until the old revisions "
        "have drained, then drop it in its own migration with `-- hrms:allow ban-drop-column reason: "
        "<why the data is not needed>` (take a backup first).",
    bad="ALTER TABLE hrms.employees_employee DROP COLUMN department_code;\n",
    good="-- Step 1 of the contract: stop writing the column (code change), keep the data.\n"
         "COMMENT ON COLUMN hrms.employees_employee.department_code IS 'deprecated: use team_id';\n",
    node_types=("AlterTableStmt",),
    check=check,
)
