from hrms_pipelines.migrations.check.model import Hit, Prediction, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql

WIDE = {"REINDEX_OBJECT_SCHEMA": "schema", "REINDEX_OBJECT_DATABASE": "database"}


def concurrently(node: dict) -> bool:
    """REINDEX (CONCURRENTLY) / REINDEX ... CONCURRENTLY, but not (CONCURRENTLY false)."""
    for param in node.get("params", ()):
        option = param.get("DefElem", {})
        if option.get("defname") == "concurrently":
            value = option.get("arg", {}).get("String", {}).get("sval", "true").lower()
            return value not in ("false", "off", "0", "no")
    return False


def check(stmt, state):
    node = stmt.node
    kind = node.get("kind")
    if kind == "REINDEX_OBJECT_SYSTEM" or concurrently(node):
        return  # system catalogs cannot be reindexed concurrently
    if kind in WIDE:
        yield Hit(stmt.start, f"REINDEX of the whole {WIDE[kind]} {node.get('name') or ''} rebuilds every index of "
                              "every table in it.".replace("  ", " "), Severity.DANGER)
        return
    name = _sql.relation(node.get("relation"))
    if kind == "REINDEX_OBJECT_INDEX":
        table = state.catalog.index_table.get(name) or state.catalog.index_table.get(name.rsplit(".", 1)[-1])
        if name in state.indexes_created_here:
            return
        tier = state.tier(table) if table else Severity.WARNING
        on = state.size_note(table) if table else "a table the analyzer does not know"
        if tier:
            yield Hit(stmt.start, f"Index {name} on {on}.", tier)
    elif tier := state.tier(name):
        yield Hit(stmt.start, f"Every index of {state.size_note(name)}.", tier)


RULE = Rule(
    id="require-concurrent-reindex",
    severity=Severity.DANGER,
    squawk="require-concurrent-reindex",
    why="REINDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on each index it rebuilds (queries that "
        "would use it wait, reads included) and a SHARE lock on its table (writes wait) for the whole rebuild.",
    fix="REINDEX INDEX CONCURRENTLY (or TABLE CONCURRENTLY) in a migration marked `-- hrms:non-transactional`; "
        "a failed concurrent rebuild leaves an INVALID `_ccnew` index to drop with DROP INDEX CONCURRENTLY.",
    bad="REINDEX INDEX hrms.payroll_payslipline_component_idx;\n",
    good="-- hrms:non-transactional\nREINDEX INDEX CONCURRENTLY hrms.payroll_payslipline_component_idx;\n",
    node_types=("ReindexStmt",),
    check=check,
    predicts=Prediction("ShareLock", "rewrite"),
    in_down_files=True,
)
