from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if node.get("whereClause"):
        return
    table = _sql.relation(node.get("relation"))
    if tier := state.tier(table):
        verb = "UPDATE" if stmt.kind == "UpdateStmt" else "DELETE"
        yield Hit(stmt.start, f"{verb} of every row of {state.size_note(table)} in one transaction.", tier)


RULE = Rule(
    id="ban-update-or-delete-without-where",
    severity=Severity.DANGER,
    why="An UPDATE or DELETE without WHERE touches every row in one transaction: it locks them all until "
        "commit, bloats the table and its WAL, and on a large table outlasts the statement_timeout.",
    fix="Playbook pattern 3: backfill in keyset batches with a pause between them (the data_backfill "
        "job, resumable from its checkpoint), outside the schema migration.",
    bad="UPDATE hrms.employees_employee SET status = 'active';\n",
    good="UPDATE hrms.employees_employee SET status = 'active' WHERE id BETWEEN 1 AND 1000 AND status IS NULL;\n",
    node_types=("UpdateStmt", "DeleteStmt"),
    check=check,
    predicts=Prediction("RowExclusiveLock", "scan"),
)
