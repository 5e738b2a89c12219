"""Privilege escalation: CREATE/ALTER ROLE (or USER, GROUP) with a dangerous attribute, a password or
membership of other roles."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity

ATTRIBUTES = {"superuser": "SUPERUSER", "createrole": "CREATEROLE", "bypassrls": "BYPASSRLS",
              "isreplication": "REPLICATION"}
MEMBERSHIP = {"addroleto": "IN ROLE", "rolemembers": "ROLE", "adminmembers": "ADMIN"}


def _enabled(option: dict) -> bool:
    arg = option.get("arg")
    return bool(arg and arg.get("Boolean", {}).get("boolval"))


def check(stmt, state):
    node = stmt.node
    role = node.get("role") if stmt.kind == "CreateRoleStmt" else node.get("role", {}).get("rolename", "?")
    granted = []
    for item in node.get("options", ()):
        option = item.get("DefElem", {})
        name = option.get("defname")
        if name in ATTRIBUTES and _enabled(option):
            granted.append(ATTRIBUTES[name])
        elif name == "password" and option.get("arg") is not None:  # PASSWORD NULL removes one: harmless
            granted.append("a PASSWORD (a secret in the migration file and the server's logs)")
        elif name in MEMBERSHIP:
            granted.append(f"{MEMBERSHIP[name]} (role membership)")
    if granted:
        verb = "CREATE" if stmt.kind == "CreateRoleStmt" else "ALTER"
        yield Hit(stmt.start, f"{verb} ROLE {role} sets {', '.join(granted)}.")


RULE = Rule(
    id="ban-role-escalation",
    severity=Severity.DANGER,
    escalation=True,
    why="A migration runs as the migrator, which must not be able to mint a more powerful login: SUPERUSER, "
        "CREATEROLE, BYPASSRLS and REPLICATION bypass every privilege and row-security policy of the HR data, a "
        "PASSWORD puts a secret into the migration file, and IN ROLE / ROLE / ADMIN grant memberships. A "
        "suppression in the same file cannot allow it.",
    fix="Roles are an administrator's job outside the migrations: `python -m hrms_pipelines.roles sql` prints "
        "the reviewed statements, passwords are set with psql's \\password. A migration only GRANTs privileges "
        "on its own objects to the existing duty roles.",
    bad="CREATE ROLE hrms_support LOGIN SUPERUSER PASSWORD 'changeme';\n",
    good="GRANT SELECT ON hrms.org_team TO hrms_reader;\n",
    node_types=("CreateRoleStmt", "AlterRoleStmt"),
    check=check,
    in_down_files=True,
)
