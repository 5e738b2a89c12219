"""Which statements take locks that can queue behind (and then block) other sessions: DDL, like
squawk's `possibly_slow_stmt` (a CREATE TABLE only when it references another table)."""

LOCKING = {
    "IndexStmt", "DropStmt", "RenameStmt", "TruncateStmt", "ClusterStmt", "VacuumStmt", "ReindexStmt",
    "LockStmt", "RefreshMatViewStmt", "CommentStmt", "ViewStmt", "CreateTableAsStmt", "DefineStmt",
    "CompositeTypeStmt", "CreateEnumStmt", "CreateTrigStmt", "CreatePolicyStmt", "CreateSeqStmt",
    "CreateFunctionStmt", "CreateDomainStmt", "CreateExtensionStmt", "CreateSchemaStmt", "RuleStmt",
    "GrantStmt",
}


def takes_locks(stmt) -> bool:
    kind = stmt.kind
    if kind == "CreateStmt":
        return _references_other_table(stmt.node)
    return kind in LOCKING or kind.startswith(("Alter", "Drop"))


def _references_other_table(node: dict) -> bool:
    for element in node.get("tableElts", ()):
        if "Constraint" in element and element["Constraint"].get("contype") == "CONSTR_FOREIGN":
            return True
        for con in element.get("ColumnDef", {}).get("constraints", ()):
            if con.get("Constraint", {}).get("contype") == "CONSTR_FOREIGN":
                return True
    return bool(node.get("partbound") or node.get("inhRelations"))
