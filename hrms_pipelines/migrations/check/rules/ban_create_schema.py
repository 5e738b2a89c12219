"""Privilege escalation: a schema outside the project's own (hrms, hrms_meta)."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules._protected import PROJECT_SCHEMAS


def check(stmt, state):
    node = stmt.node
    if stmt.kind == "RenameStmt":
        if node.get("renameType") == "OBJECT_SCHEMA" and node.get("newname") not in PROJECT_SCHEMAS:
            yield Hit(stmt.start, f"Renames schema {node.get('subname')} to {node.get('newname')}, outside the "
                                  f"project's schemas ({', '.join(PROJECT_SCHEMAS)}).")
        return
    name = node.get("schemaname") or node.get("authrole", {}).get("rolename")
    if name not in PROJECT_SCHEMAS:
        shown = name or "named after the current user"
        yield Hit(stmt.start, f"Creates schema {shown}, outside the project's schemas ({', '.join(PROJECT_SCHEMAS)}).")


RULE = Rule(
    id="ban-create-schema",
    severity=Severity.DANGER,
    escalation=True,
    why="A schema named like a role (`postgres`, `\"$user\"`'s first entry for that role) or put on someone's "
        "search_path lets the migrator's functions and operators shadow pg_catalog's in another role's session: "
        "an operator `<>(oid, regrole)` is a better match than the built-in one, so the administrator's or the "
        "superuser's next query runs it with their rights (CVE-2018-1058). The project's objects live in its own "
        "schemas only; a suppression in the same file cannot allow another.",
    fix="Create tables, functions and types in the hrms schema (the ledger's in hrms_meta); a new schema is the "
        "administrator's decision, made outside the migrations (and added to the project's settings).",
    bad="CREATE SCHEMA postgres;\n",
    good="CREATE TABLE hrms.leave_scratch (id bigint PRIMARY KEY);\n",
    node_types=("CreateSchemaStmt", "RenameStmt"),
    check=check,
    in_down_files=True,
)
