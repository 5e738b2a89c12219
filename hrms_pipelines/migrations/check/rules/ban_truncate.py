from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    tables = [_sql.relation(r.get("RangeVar")) for r in stmt.node.get("relations", ())]
    existing = [t for t in tables if not state.is_new(t)]
    if existing:
        yield Hit(stmt.start, "Empties " + ", ".join(state.size_note(t) for t in existing) + ".")


RULE = Rule(
    id="ban-truncate",
    severity=Severity.DANGER,
    why="TRUNCATE deletes every row of the table for good under an ACCESS EXCLUSIVE lock; a down file "
        "cannot bring the data back.",
    fix="Delete only what must go, in keyset batches (the data_backfill job), or archive first; if the "
        "table really must be emptied, say why with `-- hrms:allow ban-truncate reason: <why>`.",
    bad="TRUNCATE hrms.imports_importrecord;\n",
    good="CREATE TABLE hrms.imports_scratch (id bigint PRIMARY KEY);\nTRUNCATE hrms.imports_scratch;\n",
    node_types=("TruncateStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "rewrite"),
)
