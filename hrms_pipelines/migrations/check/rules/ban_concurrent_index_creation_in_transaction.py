from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def _concurrent(stmt) -> str | None:
    node = stmt.node
    if stmt.kind == "IndexStmt" and node.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY"
    if stmt.kind == "DropStmt" and node.get("concurrent"):
        return "DROP INDEX CONCURRENTLY"
    if stmt.kind == "ReindexStmt" and any(
        p.get("DefElem", {}).get("defname") == "concurrently" for p in node.get("params", ())
    ):
        return "REINDEX CONCURRENTLY"
    if stmt.kind == "AlterTableStmt":
        for cmd in _sql.alter_commands(node):
            if cmd.get("subtype") == "AT_DetachPartition" and cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"):
                return "DETACH PARTITION CONCURRENTLY"
    if stmt.kind == "VacuumStmt" and node.get("is_vacuumcmd"):
        return "VACUUM"
    return None


def check(stmt, state):
    if not state.in_transaction:
        return
    what = _concurrent(stmt)
    if what:
        where = ("the runner runs this file in one transaction (no `-- hrms:non-transactional` "
                 "marker)" if state.runner_transaction else "it follows a BEGIN")
        yield Hit(stmt.start, f"{what} here fails: {where}.")


RULE = Rule(
    id="ban-concurrent-index-creation-in-transaction",
    severity=Severity.DANGER,
    squawk="ban-concurrent-index-creation-in-transaction",
    why="CONCURRENTLY (and VACUUM) cannot run inside a transaction block: PostgreSQL rejects the "
        "statement and the migration fails.",
    fix="Put the statement in its own migration whose first line is `-- hrms:non-transactional`, with "
        "IF NOT EXISTS / IF EXISTS so a re-run after an interruption is safe.",
    bad="CREATE INDEX CONCURRENTLY payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
    good="-- hrms:non-transactional\n"
         "CREATE INDEX CONCURRENTLY IF NOT EXISTS payroll_payslip_status_idx ON hrms.payroll_payslip (status);\n",
    node_types=("IndexStmt", "DropStmt", "ReindexStmt", "AlterTableStmt", "VacuumStmt"),
    check=check,
    in_down_files=True,
)
