"""Privilege escalation: session_replication_role, which switches off every ordinary trigger."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity

NAME = "session_replication_role"


def _calls_set_config(node) -> bool:
    """Anywhere in the statement: set_config('session_replication_role', ...)."""
    if isinstance(node, list):
        return any(_calls_set_config(item) for item in node)
    if not isinstance(node, dict):
        return False
    call = node.get("FuncCall")
    if call:
        names = [n.get("String", {}).get("sval", "").lower() for n in call.get("funcname", ())]
        args = call.get("args", ())
        first = args[0].get("A_Const", {}).get("sval", {}).get("sval", "") if args else ""
        if names and names[-1] == "set_config" and first.strip().lower() == NAME:
            return True
    return any(_calls_set_config(value) for value in node.values())


def check(stmt, state):
    node = stmt.node
    setting = node.get("setstmt", {}) if stmt.kind in ("AlterRoleSetStmt", "AlterDatabaseSetStmt") else node
    if stmt.kind in ("VariableSetStmt", "AlterRoleSetStmt", "AlterDatabaseSetStmt"):
        if (setting.get("name") or "").lower() == NAME and setting.get("kind") != "VAR_RESET":
            yield Hit(stmt.start, f"Sets {NAME}: with `replica`, no ordinary trigger fires, the audit log's and "
                                  "the ledger's guards included.")
    elif _calls_set_config(node):
        yield Hit(stmt.start, f"Calls set_config('{NAME}', ...): with `replica`, no ordinary trigger fires.")


RULE = Rule(
    id="ban-session-replication-role",
    severity=Severity.DANGER,
    escalation=True,
    why="session_replication_role = replica makes every ordinary trigger skip, on every table: the triggers "
        "that keep the audit log append-only and guard the ledger and undo records stop firing for the rest "
        "of the session (or, set on a role or database, for every later session). It is meant for replication "
        "tools; a suppression in the same file cannot allow it.",
    fix="Leave triggers on; if a bulk load is too slow with them, it belongs to the import jobs (COPY into "
        "staging, set-based SQL), not to a migration.",
    bad="SET LOCAL session_replication_role = replica;\n",
    good="SET LOCAL work_mem = '64MB';\n",
    node_types=("VariableSetStmt", "AlterRoleSetStmt", "AlterDatabaseSetStmt", "SelectStmt"),
    check=check,
    in_down_files=True,
)
