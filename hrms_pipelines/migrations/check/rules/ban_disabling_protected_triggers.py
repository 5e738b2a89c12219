"""Privilege escalation: switching off the triggers that guard the audit log, the ledger, and the
change-capture and undo records (_protected)."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql
from hrms_pipelines.migrations.check.rules._protected import is_protected

# ALTER TABLE subcommands that stop a trigger from firing in ordinary sessions
# The functions the audit log's guards run: replaced by a no-op, the guard is off though the trigger is on.
GUARD_FUNCTIONS = frozenset({"core_auditlog_append_only", "core_auditlog_moved"})

SWITCH_OFF = {"AT_DisableTrig": "DISABLE TRIGGER {}", "AT_DisableTrigAll": "DISABLE TRIGGER ALL",
              "AT_DisableTrigUser": "DISABLE TRIGGER USER", "AT_EnableReplicaTrig": "ENABLE REPLICA TRIGGER {}"}


def check(stmt, state):
    node = stmt.node
    if stmt.kind == "AlterTableStmt":
        table = _sql.relation(node.get("relation"))
        if not is_protected(table):
            return
        for cmd in _sql.alter_commands(node):
            if cmd.get("subtype") in SWITCH_OFF:
                what = SWITCH_OFF[cmd["subtype"]].format(cmd.get("name", ""))
                yield Hit(stmt.start, f"`ALTER TABLE {table} {what}` switches off what guards {table}.")
    elif stmt.kind == "CreateFunctionStmt" and node.get("replace"):
        name = _sql.names(node.get("funcname", ()))
        if name.rsplit(".", 1)[-1] in GUARD_FUNCTIONS:
            yield Hit(stmt.start, f"Replaces {name}, the function the audit log's guard trigger runs.")
    elif stmt.kind == "DropStmt" and node.get("removeType") in ("OBJECT_FUNCTION", "OBJECT_ROUTINE") and not state.down:
        for obj in node.get("objects", ()):
            name = _sql.names(obj.get("ObjectWithArgs", {}).get("objname", ()))
            if name.rsplit(".", 1)[-1] in GUARD_FUNCTIONS:
                yield Hit(stmt.start, f"Drops {name}, the function the audit log's guard trigger runs.")
    elif stmt.kind == "DropStmt" and node.get("removeType") == "OBJECT_TRIGGER" and not state.down:
        # a down file drops the guard its up file created: reverting is revert_migrations' (gated) business
        for obj in node.get("objects", ()):
            items = [i["String"]["sval"] for i in obj.get("List", {}).get("items", ()) if "String" in i]
            table, trigger = ".".join(items[:-1]), items[-1] if items else "?"
            if is_protected(table):
                yield Hit(stmt.start, f"Drops trigger {trigger} of {table}.")


RULE = Rule(
    id="ban-disabling-protected-triggers",
    severity=Severity.DANGER,
    escalation=True,
    why="The audit log is append-only because triggers refuse UPDATE, DELETE and TRUNCATE, even for the "
        "migrator that owns it; the ledger, an import's record and the change-capture and undo tables are "
        "guarded the same way. A migration that disables (or sets to REPLICA, or drops) such a trigger, "
        "deletes, and puts it back leaves no trace; a suppression in the same file cannot allow it.",
    fix="Never switch off a guard: add rows (a correcting audit entry), or ask the administrator, outside the "
        "migrations and with its own audit trail, for what the guard refuses. (A down file may drop the trigger "
        "or function its own up file created: that is the revert, which revert_migrations gates.)",
    bad="ALTER TABLE hrms.core_auditlog DISABLE TRIGGER hrms_guard_auditlog_rows;\n",
    good="ALTER TABLE hrms.leave_leaverequest DISABLE TRIGGER USER;\n",
    node_types=("AlterTableStmt", "DropStmt", "CreateFunctionStmt"),
    check=check,
    in_down_files=True,
)
