from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if node.get("renameType") != "OBJECT_TABLE":
        return
    table = _sql.relation(node.get("relation"))
    if not state.is_new(table):
        yield Hit(stmt.start, f"{state.size_note(table)} -> {node.get('newname')}.")


RULE = Rule(
    id="renaming-table",
    severity=Severity.DANGER,
    squawk="renaming-table",
    why="Renaming a table breaks every running release (and view, function and report) that uses the "
        "old name the moment the migration commits.",
    fix="Expand/contract: create the new table (or a view under the new name), write both, backfill in "
        "batches, switch reads, and drop the old one in a later migration.",
    bad="ALTER TABLE hrms.leave_leaverequest RENAME TO leave_request;\n",
    good="CREATE VIEW hrms.leave_request AS SELECT * FROM hrms.leave_leaverequest;\n",
    node_types=("RenameStmt",),
    check=check,
)
