"""Privilege escalation: ALTER DEFAULT PRIVILEGES ... GRANT, which widens access to every future object."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity


def check(stmt, state):
    action = stmt.node.get("action", {})
    if not action.get("is_grant"):
        return  # REVOKE narrows access: fine
    privileges = ", ".join(p.get("AccessPriv", {}).get("priv_name", "").upper()
                           for p in action.get("privileges") or ()) or "ALL"
    grantees = ", ".join(g.get("RoleSpec", {}).get("rolename") or "PUBLIC" for g in action.get("grantees", ()))
    objects = action.get("objtype", "").replace("OBJECT_", "").lower() + "s"
    yield Hit(stmt.start, f"Every future {objects[:-1]} gets {privileges} for {grantees} by default.")


RULE = Rule(
    id="ban-widening-default-privileges",
    severity=Severity.DANGER,
    escalation=True,
    why="ALTER DEFAULT PRIVILEGES ... GRANT gives access to objects that do not exist yet: every table a later "
        "migration creates (a salary history, a table of national ids) is readable or writable by the grantee "
        "without anyone reviewing that grant. A suppression in the same file cannot allow it.",
    fix="Grant on each object explicitly in the migration that creates it (GRANT SELECT ON hrms.<table> TO "
        "hrms_reader), so every grant is reviewed with its table. REVOKE in default privileges is fine.",
    bad="ALTER DEFAULT PRIVILEGES IN SCHEMA hrms GRANT SELECT ON TABLES TO hrms_reader;\n",
    good="ALTER DEFAULT PRIVILEGES IN SCHEMA hrms REVOKE ALL ON TABLES FROM PUBLIC;\n",
    node_types=("AlterDefaultPrivilegesStmt",),
    check=check,
    in_down_files=True,
)
