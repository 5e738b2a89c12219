"""Privilege escalation: GRANT of privileges TO PUBLIC, i.e. to every role of the cluster."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules._plpgsql import RUNTIME_IDENT, RUNTIME_VALUE


def _objects(node: dict) -> str:
    names = []
    for obj in node.get("objects", ()):
        if "RangeVar" in obj:
            rv = obj["RangeVar"]
            names.append(".".join(p for p in (rv.get("schemaname"), rv.get("relname")) if p))
        elif "String" in obj:
            names.append(obj["String"]["sval"])
    return ", ".join(names) or node.get("objtype", "").replace("OBJECT_", "").lower()


def check(stmt, state):
    node = stmt.node
    if not node.get("is_grant"):
        return
    grantees = [g.get("RoleSpec", {}) for g in node.get("grantees", ())]
    privileges = ", ".join(p.get("AccessPriv", {}).get("priv_name", "").upper()
                           for p in node.get("privileges") or ()) or "ALL"
    if any(g.get("roletype") == "ROLESPEC_PUBLIC" for g in grantees):
        yield Hit(stmt.start, f"Grants {privileges} on {_objects(node)} to PUBLIC.")
    elif any(g.get("rolename") in (RUNTIME_VALUE, RUNTIME_IDENT) for g in grantees):
        yield Hit(stmt.start, f"Grants {privileges} on {_objects(node)} to a role named at run time, which may be "
                              "PUBLIC.")


RULE = Rule(
    id="ban-grant-to-public",
    severity=Severity.DANGER,
    escalation=True,
    why="PUBLIC is every role of the cluster, present and future: application logins, other databases' "
        "owners, a reporting tool's read-only user. Privileges granted to it on HR objects reach salaries and "
        "personal data through any login. A suppression in the same file cannot allow it.",
    fix="Grant to the duty role that needs it (hrms_reader, hrms_importer, hrms_restorer), never to PUBLIC.",
    bad="GRANT SELECT ON hrms.employees_employee TO PUBLIC;\n",
    good="GRANT SELECT ON hrms.employees_employee TO hrms_reader;\n",
    node_types=("GrantStmt",),
    check=check,
    in_down_files=True,
)
