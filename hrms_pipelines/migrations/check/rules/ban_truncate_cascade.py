from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    if stmt.node.get("behavior") == "DROP_CASCADE":
        tables = [_sql.relation(r.get("RangeVar")) for r in stmt.node.get("relations", ())]
        yield Hit(stmt.start, f"TRUNCATE {', '.join(tables)} CASCADE.")


RULE = Rule(
    id="ban-truncate-cascade",
    severity=Severity.DANGER,
    squawk="ban-truncate-cascade",
    why="TRUNCATE ... CASCADE also empties every table with a foreign key to the truncated ones, and the ones "
        "referencing those, recursively: which tables lose their rows is decided by the schema at run time, "
        "not by the migration (a table added next month is emptied too).",
    fix="Name every table to empty, with RESTRICT (the default), so TRUNCATE fails instead of spreading; or "
        "delete what must go in batches (data_backfill).",
    bad="CREATE TABLE hrms.scratch_ref (id bigint PRIMARY KEY);\nTRUNCATE hrms.scratch_ref CASCADE;\n",
    good="CREATE TABLE hrms.scratch_ref (id bigint PRIMARY KEY);\nTRUNCATE hrms.scratch_ref;\n",
    node_types=("TruncateStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", "rewrite"),
    in_down_files=True,
)
