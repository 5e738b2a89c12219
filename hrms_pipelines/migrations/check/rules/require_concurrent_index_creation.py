from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if node.get("concurrent"):
        return
    relation = node.get("relation", {})
    table = _sql.relation(relation)
    if not relation.get("inh"):  # pglast leaves out false fields
        return  # CREATE INDEX ON ONLY a partitioned parent: no build, nothing locked for long
    if tier := state.tier(table):
        detail = f"On {state.size_note(table)}."
        if table in state.catalog.partitioned:
            detail += (" It is partitioned: CONCURRENTLY is not possible on the parent, so create the index "
                       "ON ONLY the parent, build it CONCURRENTLY on each partition, then ALTER INDEX ... "
                       "ATTACH PARTITION each one.")
        yield Hit(stmt.start, detail, tier)


RULE = Rule(
    id="require-concurrent-index-creation",
    severity=Severity.DANGER,
    squawk="require-concurrent-index-creation",
    why="CREATE INDEX without CONCURRENTLY blocks every write to the table (SHARE lock) for the whole "
        "build, which on a large table outlasts the runner's statement_timeout.",
    fix="Playbook pattern 1: CREATE INDEX CONCURRENTLY IF NOT EXISTS, alone in a migration whose first "
        "line is `-- hrms:non-transactional` (CONCURRENTLY cannot run in a transaction), with "
        "DROP INDEX CONCURRENTLY IF EXISTS in its down file.",
    bad="CREATE INDEX payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
    good="-- hrms:non-transactional\n"
         "CREATE INDEX CONCURRENTLY IF NOT EXISTS payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
    node_types=("IndexStmt",),
    check=check,
    predicts=Prediction("ShareLock", "build"),
)
