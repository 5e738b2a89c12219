"""Privilege escalation: GRANT on the audit log (or one of its partitions) beyond what the project's
duties have. A role that is no duty gets nothing (the before/after values hold salaries); the migrator
(which owns the guards and so could switch them off) SELECT and INSERT only (and, on the default
partition, the DELETE that moves rows into their month, checked row by row by hrms_guard_auditlog_moved);
another duty may also be granted UPDATE and DELETE, which the guards refuse row by row, never
TRUNCATE, TRIGGER, MAINTAIN or ALL."""

from hrms_pipelines import roles
from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql
from hrms_pipelines.migrations.check.rules._protected import is_audit_log

APPEND_ONLY = {"select", "insert"}
DEFAULT_PARTITION = "core_auditlog_default"


def _objects(node: dict) -> list[str]:
    out = []
    for obj in node.get("objects", ()):
        if "RangeVar" in obj:
            out.append(_sql.relation(obj["RangeVar"]))
        elif "String" in obj:
            out.append(obj["String"]["sval"])
    return out


def check(stmt, state):
    node = stmt.node
    if not node.get("is_grant") or node.get("objtype") != "OBJECT_TABLE":
        return
    privileges = {p.get("AccessPriv", {}).get("priv_name", "").lower() for p in node.get("privileges") or ()}
    privileges = privileges or {"all"}
    grantees = {g.get("RoleSpec", {}).get("rolename") for g in node.get("grantees", ())}
    duties = set(roles.ALL_ROLES)
    if node.get("targtype") == "ACL_TARGET_ALL_IN_SCHEMA":
        schemas = [s for s in _objects(node) if s == "hrms"]
        extra = privileges - APPEND_ONLY
        if schemas and extra:
            yield Hit(stmt.start, f"Grants {', '.join(sorted(p.upper() for p in extra))} on all tables in schema "
                                  "hrms, the audit log included.")
        return
    for table in _objects(node):
        if not is_audit_log(table):
            continue
        for grantee in sorted(g or "?" for g in grantees):
            if grantee not in duties:  # the audit log's before/after values hold salaries: nothing at all
                allowed = set()
            elif grantee == roles.MIGRATOR.role:  # it owns the guards (it could switch them off)
                allowed = set(APPEND_ONLY)
                if table.rsplit(".", 1)[-1] == DEFAULT_PARTITION:
                    allowed.add("delete")
            else:  # another duty: the guards refuse its UPDATE and DELETE row by row, and it cannot switch them off
                allowed = APPEND_ONLY | {"update", "delete", "references"}
            extra = privileges - allowed
            if extra:
                yield Hit(stmt.start, f"Grants {', '.join(sorted(p.upper() for p in extra))} on the audit log "
                                      f"({table}) to {grantee}.")


RULE = Rule(
    id="ban-grant-on-audit-log",
    severity=Severity.DANGER,
    escalation=True,
    why="The audit log is the record of who changed what; it must stay append-only for everyone who logs in. "
        "A migration that grants itself UPDATE or DELETE on it (then disables its trigger, deletes, re-enables "
        "and revokes) rewrites history without a trace. Only the duties' SELECT and INSERT are granted on it "
        "(and the migrator's DELETE on the default partition, which moves rows into their month under a check); "
        "a suppression in the same file cannot allow more.",
    fix="Grant the HR tables a duty needs by name, never the audit log beyond SELECT/INSERT; a correction to the "
        "audit log is a new row, not an edit.",
    bad="GRANT UPDATE, DELETE ON hrms.core_auditlog TO hrms_migrator;\n",
    good="GRANT SELECT ON hrms.core_auditlog TO hrms_reader;\n",
    node_types=("GrantStmt",),
    check=check,
    in_down_files=True,
)
