from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for cmd in _sql.alter_commands(stmt.node):
        if cmd.get("subtype") != "AT_SetNotNull":
            continue
        column = cmd.get("name")
        proven = (
            (table, column) in state.validated_here
            or (table, column) in state.catalog.not_null_checks
            or table in state.validated_elsewhere  # squawk's cross-migration pattern
        )
        if not proven and (tier := state.tier(table)):
            yield Hit(stmt.start, f"Column {column} of {state.size_note(table)}.", tier)


RULE = Rule(
    id="adding-not-nullable-field",
    severity=Severity.DANGER,
    squawk="adding-not-nullable-field",
    why="SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock (blocking reads and writes) "
        "unless a validated CHECK (col IS NOT NULL) constraint already proves it.",
    fix="Step 3 of the 3-step pattern: ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE "
        "CONSTRAINT c in a separate migration; then SET NOT NULL (instant) and drop the CHECK.",
    bad="ALTER TABLE hrms.employees_employee ALTER COLUMN status SET NOT NULL;\n",
    good="ALTER TABLE hrms.employees_employee ADD CONSTRAINT employees_employee_status_not_null "
         "CHECK (status IS NOT NULL) NOT VALID;\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "scan"),
)
