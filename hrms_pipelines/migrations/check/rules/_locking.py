"""Which statements take locks that can queue behind (and then block) other sessions: DDL, like
squawk's `possibly_slow_stmt` (a CREATE TABLE only when it references another table)."""

from hrms_pipelines.migrations.check.model import Hit

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


def first_lock_without(setting: str):
    """A check reporting the file's first lock-taking statement while `setting` (lock_timeout or
    statement_timeout) is not in force; once per file."""

    def check(stmt, state):
        if getattr(state, setting) or setting in state.reported or not takes_locks(stmt):
            return
        state.reported.add(setting)
        yield Hit(stmt.start, "First lock-taking statement without one; reported once per file.")

    return check
