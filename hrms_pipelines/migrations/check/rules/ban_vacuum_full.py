from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if stmt.kind == "VacuumStmt":
        if not any(o.get("DefElem", {}).get("defname") == "full" for o in node.get("options", ())):
            return
        what = "VACUUM FULL"
        tables = [_sql.relation(r.get("VacuumRelation", {}).get("relation")) for r in node.get("rels", ())]
    else:
        what = "CLUSTER"
        tables = [_sql.relation(node.get("relation"))] if node.get("relation") else []
    if not tables:
        yield Hit(stmt.start, f"{what} without a table rewrites every table of the database.", Severity.DANGER)
    elif tier := state.tier(*tables):
        yield Hit(stmt.start, f"{what} of " + ", ".join(state.size_note(t) for t in tables) + ".", tier)


RULE = Rule(
    id="ban-vacuum-full",
    severity=Severity.DANGER,
    why="VACUUM FULL and CLUSTER rewrite the whole table under an ACCESS EXCLUSIVE lock, blocking reads "
        "and writes until the copy is done.",
    fix="Reclaim space online with pg_repack (or REPACK CONCURRENTLY on PostgreSQL 19+), outside the "
        "migrations; plain VACUUM (ANALYZE) needs no migration at all.",
    bad="-- hrms:non-transactional\nVACUUM FULL hrms.payroll_payslip;\n",
    good="-- hrms:non-transactional\nVACUUM (ANALYZE) hrms.payroll_payslip;\n",
    node_types=("VacuumStmt", "ClusterStmt"),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "rewrite"),
)
