"""Project rule: the import role never gets a way to delete.

Imports, seeds and backfills run as `hrms_importer`, which has SELECT, INSERT and UPDATE on the HR
tables and nothing else: that is what makes "imports never delete" hold even against a bug. A
migration that grants it DELETE, TRUNCATE or ALL (directly, by default privileges, or through
membership of another role) silently removes that guarantee.
"""

from hrms_pipelines import settings
from hrms_pipelines.migrations.check.model import Hit, Rule, Severity

FORBIDDEN = {"delete", "truncate"}


def _to_importer(grantees) -> bool:
    return any(g.get("RoleSpec", {}).get("rolename") == settings.IMPORT_ROLE for g in grantees or ())


def _granted(action: dict) -> str | None:
    if not action.get("is_grant") or not _to_importer(action.get("grantees")):
        return None
    privileges = action.get("privileges")
    if privileges is None:  # GRANT ALL
        return "ALL"
    names = {p.get("AccessPriv", {}).get("priv_name") for p in privileges}
    bad = sorted(names & FORBIDDEN)
    return ", ".join(p.upper() for p in bad) or None


def check(stmt, state):
    if stmt.kind == "GrantStmt":
        what = _granted(stmt.node)
    elif stmt.kind == "AlterDefaultPrivilegesStmt":
        what = _granted(stmt.node.get("action", {}))
        what = f"{what} by default privileges" if what else None
    else:  # GrantRoleStmt: membership of another role brings that role's privileges
        granted = [r.get("AccessPriv", {}).get("priv_name") for r in stmt.node.get("granted_roles", ())]
        what = f"membership of {', '.join(granted)}" if stmt.node.get("is_grant") and _to_importer(
            stmt.node.get("grantee_roles")) else None
    if what:
        yield Hit(stmt.start, f"Grants {what} to {settings.IMPORT_ROLE}.")


RULE = Rule(
    id="import-role-never-deletes",
    severity=Severity.DANGER,
    why=f"Imports, seeds and backfills run as {settings.IMPORT_ROLE} so that they cannot delete or "
        "truncate anything, even through a bug; granting it DELETE, TRUNCATE, ALL or another role's "
        "membership takes that guarantee away.",
    fix=f"Grant only SELECT, INSERT, UPDATE: `GRANT SELECT, INSERT, UPDATE ON hrms.<table> TO {settings.IMPORT_ROLE};`. "
        "Work that must delete runs as the schema owner in its own job (like restore_backup).",
    bad=f"CREATE TABLE hrms.core_note (id bigint PRIMARY KEY);\nGRANT ALL ON hrms.core_note TO {settings.IMPORT_ROLE};\n",
    good=f"CREATE TABLE hrms.core_note (id bigint PRIMARY KEY);\nGRANT SELECT, INSERT, UPDATE ON hrms.core_note TO {settings.IMPORT_ROLE};\n",
    node_types=("GrantStmt", "AlterDefaultPrivilegesStmt", "GrantRoleStmt"),
    check=check,
)
