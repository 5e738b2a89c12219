from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    table = _sql.relation(stmt.node.get("relation"))
    for _cmd, con in _sql.added_constraints(stmt.node):
        if con.get("contype") == "CONSTR_PRIMARY" and not con.get("indexname") and (tier := state.tier(table)):
            yield Hit(_sql.location(con, default=stmt.start), f"PRIMARY KEY on {state.size_note(table)}.", tier)


RULE = Rule(
    id="adding-serial-primary-key-field",
    severity=Severity.DANGER,
    squawk="adding-serial-primary-key-field",
    why="Adding a PRIMARY KEY builds its unique index (and, for a new column, fills it) under an ACCESS "
        "EXCLUSIVE lock, blocking reads and writes for the whole build.",
    fix="CREATE UNIQUE INDEX CONCURRENTLY in a `-- hrms:non-transactional` migration, then "
        "ALTER TABLE ... ADD CONSTRAINT name PRIMARY KEY USING INDEX name.",
    bad="ALTER TABLE hrms.core_backfillcheckpoint ADD COLUMN id bigserial PRIMARY KEY;\n",
    good="ALTER TABLE hrms.core_backfillcheckpoint ADD CONSTRAINT core_backfillcheckpoint_pkey2 "
         "PRIMARY KEY USING INDEX core_backfillcheckpoint_id_idx;\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("ShareLock", "build"),
)
