from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    node = stmt.node
    if node.get("subtype") != "C":  # ADD [CONSTRAINT ...] CHECK / NOT NULL
        return
    constraint = node.get("def", {}).get("Constraint", {})
    domain = _sql.names(node.get("typeName", ()))
    if constraint.get("skip_validation"):
        yield Hit(stmt.start, f"Domain {domain}: NOT VALID skips the scan now, but VALIDATE CONSTRAINT later scans "
                              "every column of that domain, in every table, under SHARE locks.", Severity.WARNING)
    else:
        yield Hit(stmt.start, f"Domain {domain}: every column of that domain, in every table, is scanned now.")


RULE = Rule(
    id="ban-alter-domain-with-add-constraint",
    severity=Severity.DANGER,
    squawk="ban-alter-domain-with-add-constraint",
    why="ALTER DOMAIN ... ADD CONSTRAINT checks every column of that domain in every table that uses it, "
        "holding a SHARE lock on each (writes wait) for the whole scan; which tables that touches is not "
        "visible in the migration.",
    fix="Use table and column constraints instead (ADD CONSTRAINT ... CHECK ... NOT VALID on each table, then "
        "VALIDATE CONSTRAINT in a later migration).",
    bad="ALTER DOMAIN hrms.positive_amount ADD CONSTRAINT positive_amount_check CHECK (VALUE > 0);\n",
    good="ALTER TABLE hrms.payroll_payslip ADD CONSTRAINT payroll_payslip_net_pay_positive "
         "CHECK (net_pay > 0) NOT VALID;\n",
    node_types=("AlterDomainStmt",),
    check=check,
    predicts=Prediction("ShareLock", "scan"),
)
