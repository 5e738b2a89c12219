from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql

CONSTRAINTS = {"CONSTR_CHECK": "CHECK", "CONSTR_NOTNULL": "NOT NULL"}


def check(stmt, state):
    kinds = [CONSTRAINTS[c["Constraint"]["contype"]] for c in stmt.node.get("constraints", ())
             if c.get("Constraint", {}).get("contype") in CONSTRAINTS]
    if kinds:
        domain = _sql.names(stmt.node.get("domainname", ()))
        yield Hit(stmt.start, f"Domain {domain} with {', '.join(kinds)}.")


RULE = Rule(
    id="ban-create-domain-with-constraint",
    severity=Severity.WARNING,
    squawk="ban-create-domain-with-constraint",
    why="A domain with a CHECK or NOT NULL constraint is cheap to create but hard to change online: adding or "
        "changing its constraint later scans every column of that domain in every table under SHARE locks "
        "(ban-alter-domain-with-add-constraint), and it cannot be done one table at a time.",
    fix="Create the domain without constraints (or use the base type) and put CHECK constraints on the table "
        "columns, where NOT VALID / VALIDATE CONSTRAINT work table by table.",
    bad="CREATE DOMAIN hrms.positive_amount AS numeric(14,2) CHECK (VALUE > 0);\n",
    good="CREATE DOMAIN hrms.amount AS numeric(14,2);\n",
    node_types=("CreateDomainStmt",),
    check=check,
)
