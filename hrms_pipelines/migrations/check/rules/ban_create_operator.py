"""Privilege escalation: CREATE OPERATOR, which can shadow a built-in operator in another role's session."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def check(stmt, state):
    if stmt.node.get("kind") == "OBJECT_OPERATOR":
        args = {}
        for item in stmt.node.get("definition", ()):
            option = item.get("DefElem", {})
            if option.get("defname") in ("leftarg", "rightarg"):
                args[option["defname"]] = _sql.names(option.get("arg", {}).get("TypeName", {}).get("names", ()))
        yield Hit(stmt.start, f"Creates operator {_sql.names(stmt.node.get('defnames', ()))}"
                              f"({args.get('leftarg', 'NONE')}, {args.get('rightarg', 'NONE')}).")


RULE = Rule(
    id="ban-create-operator",
    severity=Severity.DANGER,
    escalation=True,
    why="PostgreSQL picks the operator whose argument types match best, across every schema on the search "
        "path: `<>(oid, regrole)` beats pg_catalog's `<>(oid, oid)`, so a session that compares an OID with a "
        "role name (the roles' bootstrap, an administrator's script) calls the migration's function with its own "
        "rights (CVE-2018-1058). No HR migration needs an operator of its own; a suppression in the same file "
        "cannot allow it.",
    fix="Write a function (qualified, in the hrms schema) and call it by its name, or compare with the built-in "
        "operators.",
    bad="CREATE FUNCTION hrms.ne(oid, regrole) RETURNS boolean LANGUAGE sql AS $$ SELECT $1 <> $2::oid $$;\n"
        "CREATE OPERATOR hrms.<> (LEFTARG = oid, RIGHTARG = regrole, FUNCTION = hrms.ne);\n",
    good="CREATE FUNCTION hrms.ne(oid, regrole) RETURNS boolean LANGUAGE sql AS $$ SELECT $1 <> $2::oid $$;\n",
    node_types=("DefineStmt",),
    check=check,
    in_down_files=True,
)
