"""Privilege escalation: functions that run SQL given as a string, outside EXECUTE (query_to_xml and
its relatives, dblink): the same hiding place as dynamic SQL, reachable from a plain SELECT."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity

RUNS_SQL = frozenset({"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "dblink", "dblink_exec",
                      "dblink_open", "dblink_send_query"})


def _calls(node):
    """Every function call in a parse tree, by its (unqualified, lower-case) name."""
    if isinstance(node, list):
        for item in node:
            yield from _calls(item)
    elif isinstance(node, dict):
        call = node.get("FuncCall")
        if call:
            names = [n.get("String", {}).get("sval", "") for n in call.get("funcname", ())]
            if names:
                yield names[-1].lower()
        for value in node.values():
            yield from _calls(value)


def check(stmt, state):
    for name in sorted(set(_calls(stmt.node)) & RUNS_SQL):
        yield Hit(stmt.start, f"{name}() runs the SQL it is given as a string; no rule here sees that statement.")


RULE = Rule(
    id="ban-sql-in-strings",
    severity=Severity.DANGER,
    escalation=True,
    why="query_to_xml() (and its relatives) and dblink run a statement given as text, so a payload built at run "
        "time (decoded from base64, read from a table) passes every rule here, like EXECUTE of a variable, and "
        "runs with the migrator's rights, or a superuser's when one calls the function it hides in. A suppression "
        "in the same file cannot allow it.",
    fix="Write the query itself (SELECT ... directly, or EXECUTE format() of a literal template with %I/%L, which "
        "the analyzer reads).",
    bad="SELECT query_to_xml(convert_from(decode('U0VMRUNUIDE=', 'base64'), 'UTF8'), true, true, '');\n",
    good="SELECT count(*) FROM hrms.org_team;\n",
    node_types=("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "CallStmt", "CreateTableAsStmt", "ViewStmt",
                "CopyStmt"),
    check=check,
    in_down_files=True,
)
