"""Privilege escalation: GRANT of a role (membership), which hands over every right of that role."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity


def _names(items, key: str) -> str:
    out = []
    for item in items or ():
        body = item.get(key, {})
        out.append(body.get("priv_name") or body.get("rolename") or body.get("roletype", "?").replace("ROLESPEC_", ""))
    return ", ".join(out)


def check(stmt, state):
    node = stmt.node
    if node.get("is_grant"):
        yield Hit(stmt.start, f"Grants membership of {_names(node.get('granted_roles'), 'AccessPriv')} to "
                              f"{_names(node.get('grantee_roles'), 'RoleSpec')}.")


RULE = Rule(
    id="ban-grant-role-membership",
    severity=Severity.DANGER,
    escalation=True,
    why="GRANT <role> TO <role> makes the grantee a member: it gets every privilege of the granted role (and, "
        "with SET, may become it), which is how a duty with few rights ends up with the owner's. A suppression "
        "in the same file cannot allow it.",
    fix="Grant the privileges the duty needs on the objects it needs (GRANT SELECT, INSERT ON hrms.<table> TO "
        "hrms_importer); role memberships are an administrator's decision outside the migrations.",
    bad="GRANT hrms_migrator TO hrms_importer;\n",
    good="GRANT SELECT, INSERT, UPDATE ON hrms.org_team TO hrms_importer;\n",
    node_types=("GrantRoleStmt",),
    check=check,
    in_down_files=True,
)
