from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if node.get("renameType") != "OBJECT_COLUMN" or node.get("relationType") not in ("OBJECT_TABLE", None):
        return
    table = _sql.relation(node.get("relation"))
    if not state.is_new(table):
        yield Hit(stmt.start, f"{table}.{node.get('subname')} -> {node.get('newname')}.")


RULE = Rule(
    id="renaming-column",
    severity=Severity.DANGER,
    squawk="renaming-column",
    why="Renaming a column breaks every running release that uses the old name the moment the "
        "migration commits (deploys are never instantaneous).",
    fix="Expand/contract (playbook pattern 4): add the new column, write both, backfill in batches, "
        "switch reads, and drop the old column in a later migration.",
    bad="ALTER TABLE hrms.employees_employee RENAME COLUMN job_title TO title;\n",
    good="ALTER TABLE hrms.employees_employee ADD COLUMN title text;\n",
    node_types=("RenameStmt",),
    check=check,
)
