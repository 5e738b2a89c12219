from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if node.get("removeType") != "OBJECT_INDEX" or node.get("concurrent"):
        return
    indexes = [_sql.names(obj["List"]["items"]) for obj in node.get("objects", ()) if "List" in obj]
    tables = []
    for index in indexes:
        if index in state.indexes_created_here:
            continue
        table = state.catalog.index_table.get(index) or state.catalog.index_table.get(index.rsplit(".", 1)[-1])
        tables.append(table or "")
    if not tables:
        return
    known = [t for t in tables if t]
    tier = state.tier(*known) if known and len(known) == len(tables) else Severity.WARNING
    if tier:
        on = ", ".join(state.size_note(t) for t in known) or "a table the analyzer does not know"
        yield Hit(stmt.start, f"Index {', '.join(indexes)} on {on}.", tier)


RULE = Rule(
    id="require-concurrent-index-deletion",
    severity=Severity.DANGER,
    squawk="require-concurrent-index-deletion",
    why="DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the index's table, blocking "
        "reads and writes until every running query on it has finished.",
    fix="DROP INDEX CONCURRENTLY IF EXISTS, in a migration marked `-- hrms:non-transactional`.",
    bad="DROP INDEX hrms.payroll_payslip_period_idx;\n",
    good="-- hrms:non-transactional\nDROP INDEX CONCURRENTLY IF EXISTS hrms.payroll_payslip_period_idx;\n",
    node_types=("DropStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", None),
)
