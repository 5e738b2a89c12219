from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    if stmt.node.get("removeType") != "OBJECT_TABLE":
        return
    tables = [_sql.names(obj["List"]["items"]) for obj in stmt.node.get("objects", ()) if "List" in obj]
    existing = [t for t in tables if not state.is_new(t)]
    if existing:
        yield Hit(stmt.start, "Drops " + ", ".join(state.size_note(t) for t in existing) + ".")


RULE = Rule(
    id="ban-drop-table",
    severity=Severity.DANGER,
    squawk="ban-drop-table",
    why="DROP TABLE deletes the table and all its rows for good, and breaks every running release that "
        "still uses it.",
    fix="Stop using the table in code first; after the old revisions have drained, take a backup and "
        "drop it in its own migration with `-- hrms:allow ban-drop-table reason: <why>`, or rename it "
        "aside and drop it after a grace period.",
    bad="DROP TABLE hrms.leave_leaverequest;\n",
    good="CREATE TABLE hrms.leave_scratch (id bigint PRIMARY KEY);\nDROP TABLE hrms.leave_scratch;\n",
    node_types=("DropStmt",),
    check=check,
)
