from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql

KINDS = {"CONSTR_CHECK": "CHECK", "CONSTR_FOREIGN": "FOREIGN KEY"}


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for cmd, con in _sql.added_constraints(stmt.node):
        kind = KINDS.get(con.get("contype"))
        if not kind or con.get("skip_validation"):
            continue
        tables = [table]
        if kind == "FOREIGN KEY":
            tables.append(_sql.relation(con.get("pktable")))
        if tier := state.tier(*tables):
            scanned = f"scans {state.size_note(table)}"
            if kind == "FOREIGN KEY" and not state.is_new(tables[1]):
                scanned += f" and locks {tables[1]} too"
            inline = (" (written inline in ADD COLUMN, where NOT VALID is not possible: add the column, then "
                      "ADD CONSTRAINT ... NOT VALID)") if cmd.get("subtype") == "AT_AddColumn" else ""
            yield Hit(_sql.location(con, default=stmt.start),
                      f"{kind} constraint {con.get('conname') or ''} {scanned}{inline}.".replace("  ", " "), tier)
    for cmd in _sql.alter_commands(stmt.node):
        if cmd.get("subtype") == "AT_ValidateConstraint" and (table, cmd.get("name")) in state.not_valid_in_transaction:
            if tier := state.tier(table):
                yield Hit(stmt.start, f"VALIDATE CONSTRAINT {cmd.get('name')} runs in the same transaction as its "
                          "ADD ... NOT VALID, so the ADD's ACCESS EXCLUSIVE lock is held during the whole validation "
                          f"scan of {state.size_note(table)}.", tier)


RULE = Rule(
    id="constraint-missing-not-valid",
    severity=Severity.DANGER,
    squawk="constraint-missing-not-valid",
    why="Adding a CHECK or FOREIGN KEY constraint without NOT VALID scans every row while holding a lock "
        "that blocks writes (for a foreign key, on both tables).",
    fix="Add it NOT VALID (instant; new rows are checked), then VALIDATE CONSTRAINT in a separate "
        "migration: validation takes only a SHARE UPDATE EXCLUSIVE lock, so reads and writes go on.",
    bad="ALTER TABLE hrms.payroll_payslip ADD CONSTRAINT payroll_payslip_net_pay_check CHECK (net_pay >= 0);\n",
    good="ALTER TABLE hrms.payroll_payslip ADD CONSTRAINT payroll_payslip_net_pay_check CHECK (net_pay >= 0) NOT VALID;\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("ShareRowExclusiveLock", "scan"),
)
