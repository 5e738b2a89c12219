from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    parent = _sql.relation(stmt.node.get("relation"))
    for cmd in _sql.alter_commands(stmt.node):
        if cmd.get("subtype") != "AT_DetachPartition":
            continue
        partition_cmd = cmd.get("def", {}).get("PartitionCmd", {})
        if partition_cmd.get("concurrent"):
            continue
        partition = _sql.relation(partition_cmd.get("name"))
        if tier := state.tier(parent):
            yield Hit(_sql.location(partition_cmd.get("name"), default=stmt.start),
                      f"Detaching {partition} from {state.size_note(parent)}.", tier)


RULE = Rule(
    id="require-concurrent-partition-detach",
    severity=Severity.DANGER,
    squawk="require-concurrent-partition-detach",
    why="DETACH PARTITION without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the partitioned table: every "
        "query on every partition waits, behind any long query already running, until it is done.",
    fix="ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+; SHARE UPDATE EXCLUSIVE, reads and "
        "writes go on) in a migration marked `-- hrms:non-transactional`; if it is interrupted, finish it with "
        "DETACH PARTITION ... FINALIZE.",
    bad="ALTER TABLE hrms.core_auditlog DETACH PARTITION hrms.core_auditlog_y2020m01;\n",
    good="-- hrms:non-transactional\n"
         "-- hrms:allow prefer-robust-stmts reason: alone in its file; an interrupted detach is finished with FINALIZE\n"
         "ALTER TABLE hrms.core_auditlog DETACH PARTITION hrms.core_auditlog_y2020m01 CONCURRENTLY;\n",
    node_types=("AlterTableStmt",),
    check=check,
    predicts=Prediction("AccessExclusiveLock", None),
    in_down_files=True,
)
