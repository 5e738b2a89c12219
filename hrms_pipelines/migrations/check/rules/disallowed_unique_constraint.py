from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql

INDEX_BUILDING = {"CONSTR_UNIQUE": "UNIQUE", "CONSTR_EXCLUSION": "EXCLUDE"}


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for _cmd, con in _sql.added_constraints(stmt.node):
        kind = INDEX_BUILDING.get(con.get("contype"))
        if kind and not con.get("indexname") and (tier := state.tier(table)):
            yield Hit(_sql.location(con, default=stmt.start), f"{kind} on {state.size_note(table)}.", tier)


RULE = Rule(
    id="disallowed-unique-constraint",
    severity=Severity.DANGER,
    squawk="disallowed-unique-constraint",
    why="Adding a UNIQUE (or EXCLUDE) constraint builds its index under an ACCESS EXCLUSIVE lock, "
        "blocking reads and writes for the whole build.",
    fix="CREATE UNIQUE INDEX CONCURRENTLY in a `-- hrms:non-transactional` migration, then "
        "ALTER TABLE ... ADD CONSTRAINT name UNIQUE USING INDEX name (instant).",
    bad="ALTER TABLE hrms.payroll_payrollrecord ADD CONSTRAINT payroll_payrollrecord_ref_key UNIQUE (employee_id, processed_at);\n",
    good="ALTER TABLE hrms.payroll_payrollrecord ADD CONSTRAINT payroll_payrollrecord_ref_key "
         "UNIQUE USING INDEX payroll_payrollrecord_ref_idx;\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("ShareLock", "build"),
)
