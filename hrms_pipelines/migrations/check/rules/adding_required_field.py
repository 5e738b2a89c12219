from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for column in _sql.added_columns(stmt.node):
        types = {c.get("contype") for c in _sql.column_constraints(column)}
        if "CONSTR_NOTNULL" in types and not types & {"CONSTR_DEFAULT", "CONSTR_GENERATED", "CONSTR_IDENTITY"}:
            if tier := state.tier(table):
                yield Hit(_sql.location(column, default=stmt.start),
                          f"Column {column.get('colname')} on {state.size_note(table)}.", tier)


RULE = Rule(
    id="adding-required-field",
    severity=Severity.DANGER,
    squawk="adding-required-field",
    why="Adding a NOT NULL column without a default to an existing table fails as soon as the table "
        "has a row, and an ORM that adds it with a temporary default rewrites the whole table under an "
        "ACCESS EXCLUSIVE lock.",
    fix="Use the 3-step pattern: (1) ADD COLUMN nullable; (2) backfill in batches (the data_backfill "
        "job); (3) in a later migration add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL "
        "-- or add the column with a constant (non-volatile) DEFAULT.",
    bad="ALTER TABLE hrms.employees_employee ADD COLUMN grade_code text NOT NULL;\n",
    good="ALTER TABLE hrms.employees_employee ADD COLUMN grade_code text;\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "scan"),
)
