"""Privilege escalation: a SECURITY DEFINER function whose search_path is not pinned."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _sql


def _options(stmt) -> list[dict]:
    key = "options" if stmt.kind == "CreateFunctionStmt" else "actions"
    return [o["DefElem"] for o in stmt.node.get(key, ()) if "DefElem" in o]


def _search_path(options: list[dict]) -> dict | None:
    for option in options:
        if option.get("defname") == "set":
            setting = option.get("arg", {}).get("VariableSetStmt", {})
            if setting.get("name") == "search_path":
                return setting
    return None


def _path_values(setting: dict) -> list[str]:
    values = []
    for arg in setting.get("args", ()):
        const = arg.get("A_Const", {})
        values.append(const.get("sval", {}).get("sval", "") if "sval" in const else "")
    return values


def _name(stmt) -> str:
    if stmt.kind == "CreateFunctionStmt":
        return _sql.names(stmt.node.get("funcname", ()))
    return _sql.names(stmt.node.get("func", {}).get("objname", ()))


def check(stmt, state):
    options = _options(stmt)
    if not any(o.get("defname") == "security" and o.get("arg", {}).get("Boolean", {}).get("boolval") for o in options):
        return
    setting = _search_path(options)
    kind = "procedure" if stmt.node.get("is_procedure") or stmt.node.get("objtype") == "OBJECT_PROCEDURE" else "function"
    if setting is None or setting.get("kind") not in ("VAR_SET_VALUE", "VAR_SET_CURRENT"):
        yield Hit(stmt.start, f"SECURITY DEFINER {kind} {_name(stmt)} has no `SET search_path = ...` in its definition.")
        return
    unsafe = [v for v in _path_values(setting) if v in ("$user", "public")]
    if unsafe:
        yield Hit(stmt.start, f"SECURITY DEFINER {kind} {_name(stmt)} pins search_path to {', '.join(unsafe)}, a schema "
                              "other roles may create objects in.")


RULE = Rule(
    id="require-security-definer-search-path",
    severity=Severity.DANGER,
    escalation=True,
    why="A SECURITY DEFINER function runs with its owner's privileges (the migrator owns the HR schema). Without "
        "a search_path pinned in its definition it resolves names through the caller's search_path, so any "
        "role that can create an object in a schema on that path (a function named like one it calls, an "
        "operator) runs its own code as the owner. A suppression in the same file cannot allow it.",
    fix="Pin the path in the definition and qualify names: `CREATE FUNCTION ... SECURITY DEFINER SET search_path "
        "= pg_catalog, pg_temp AS $$ ... hrms.<table> ... $$` (never \"$user\" or public); or make it SECURITY "
        "INVOKER.",
    bad="CREATE FUNCTION hrms.team_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER\n"
        "    AS $$ SELECT count(*) FROM hrms.org_team $$;\n",
    good="CREATE FUNCTION hrms.team_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER\n"
         "    SET search_path = pg_catalog, pg_temp AS $$ SELECT count(*) FROM hrms.org_team $$;\n",
    node_types=("CreateFunctionStmt", "AlterFunctionStmt"),
    check=check,
    in_down_files=True,
)
