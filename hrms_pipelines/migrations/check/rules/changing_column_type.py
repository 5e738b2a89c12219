from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for cmd in _sql.alter_commands(stmt.node):
        if cmd.get("subtype") == "AT_AlterColumnType":
            if tier := state.tier(table):
                column = cmd.get("def", {}).get("ColumnDef", {})
                yield Hit(_sql.location(column, default=stmt.start), f"Column {cmd.get('name')} of {state.size_note(table)}.", tier)


RULE = Rule(
    id="changing-column-type",
    severity=Severity.DANGER,
    squawk="changing-column-type",
    why="ALTER COLUMN ... TYPE takes an ACCESS EXCLUSIVE lock and, for most type changes, rewrites the "
        "table and its indexes (blocking reads and writes throughout), and can break clients that read "
        "the column.",
    fix="Expand/contract: add a column of the new type, write both, backfill in batches, switch reads, "
        "drop the old column later. (Widening varchar(n), varchar -> text, or numeric(p,s) to a larger p with the "
        "same s needs no rewrite: trace mode shows it, or suppress with a reason.)",
    bad="ALTER TABLE hrms.payroll_payslipline ALTER COLUMN amount TYPE numeric(18,4);\n",
    good="ALTER TABLE hrms.payroll_payslipline ADD COLUMN amount_wide numeric(18,2);\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "rewrite"),
)
