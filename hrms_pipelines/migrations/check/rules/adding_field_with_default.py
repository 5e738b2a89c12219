from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql

SERIAL_TYPES = {"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"}


def _rewrite_reason(column: dict) -> tuple[str, int] | None:
    type_name = column.get("typeName", {})
    if {n.get("String", {}).get("sval") for n in type_name.get("names", ())} & SERIAL_TYPES:
        return "a serial column fills every row from a sequence (nextval is volatile)", _sql.location(type_name, column, default=-1)
    for con in _sql.column_constraints(column):
        contype = con.get("contype")
        if contype == "CONSTR_DEFAULT" and not _sql.is_constant(con.get("raw_expr")):
            expr = con.get("raw_expr")
            return "its DEFAULT is volatile (evaluated per row)", _sql.location(_sql.unwrap(expr)[1] if expr else None, con, default=-1)
        if contype == "CONSTR_GENERATED" and con.get("generated_kind") != "v":
            return "a STORED generated column is computed for every row", _sql.location(con, default=-1)
        if contype == "CONSTR_IDENTITY":
            return "an identity column fills every row from a sequence", _sql.location(con, default=-1)
    return None


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for column in _sql.added_columns(stmt.node):
        found = _rewrite_reason(column)
        if found and (tier := state.tier(table)):
            reason, loc = found
            yield Hit(loc if loc >= 0 else stmt.start,
                      f"Column {column.get('colname')} of {state.size_note(table)}: {reason}.", tier)


RULE = Rule(
    id="adding-field-with-default",
    severity=Severity.DANGER,
    squawk="adding-field-with-default",
    why="Adding a column whose value must be computed per row (a volatile DEFAULT such as "
        "gen_random_uuid() or clock_timestamp(), serial, identity, GENERATED ... STORED) rewrites the whole "
        "table under an ACCESS EXCLUSIVE lock. (A constant or non-volatile DEFAULT is instant since "
        "PostgreSQL 11.)",
    fix="Add the column nullable without the default, set the default for new rows with ALTER COLUMN ... "
        "SET DEFAULT, backfill existing rows in batches (the data_backfill job), then add NOT NULL with "
        "the CHECK ... NOT VALID / VALIDATE pattern.",
    bad="ALTER TABLE hrms.payroll_payslip ADD COLUMN public_id uuid DEFAULT gen_random_uuid();\n",
    good="ALTER TABLE hrms.payroll_payslip ADD COLUMN public_id uuid;\n"
         "ALTER TABLE hrms.payroll_payslip ALTER COLUMN public_id SET DEFAULT gen_random_uuid();\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "rewrite"),
)
