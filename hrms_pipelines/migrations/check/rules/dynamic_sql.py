"""Privilege escalation: dynamic SQL the analyzer cannot read, in a DO block (it runs during the
migration, as the migrator) or in any function body (it runs later, as the function's owner or as
whoever calls it: a superuser's maintenance script, a trigger fired by another duty).

EXECUTE of a literal, of `format('<template>', ...)` with `%I`/`%L` (or `%s` of a constant, or of a
variable declared regclass or integer), of a concatenation of literals with quote_ident()/quote_literal()
is reconstructed and checked by the other escalation rules (see _plpgsql). This rule refuses the rest:
a statement held in a variable or decoded at run time (`convert_from(decode('...', 'base64'), ...)`),
and raw run-time text spliced in with `%s`, `||` or concat(): that text may be any statement at all.
"""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity


def check(stmt, state):
    for inner in stmt.inner or ():
        if not inner.dynamic:
            continue
        if inner.sql is None:
            yield Hit(inner.offset, f"In the {inner.context}: `{inner.shown}` runs a statement built at run time; "
                                    "the analyzer cannot see which one, so no rule checked it.")
        elif inner.spliced:
            yield Hit(inner.offset, f"In the {inner.context}: `{inner.shown}` splices run-time text into the "
                                    "statement unquoted (`%s`, `||` or concat() of a value that is not a literal): "
                                    "that text may turn it into any statement.")


RULE = Rule(
    id="dynamic-sql",
    severity=Severity.DANGER,
    escalation=True,
    why="EXECUTE of a string built at run time hides the statement from review and from every rule here, "
        "privilege escalations included (GRANT, ALTER ROLE, COPY ... PROGRAM): a payload decoded from base64 "
        "or read from a variable passes every check and runs with the migrator's rights, or, in a function, "
        "with the rights of whoever calls it later, a superuser included. A suppression in the same file "
        "cannot allow it.",
    fix="Write the statement out, or build it with format() from a literal template with %I for identifiers and "
        "%L for values (the analyzer reads the template and checks it); `%s` only for a constant or a variable "
        "declared regclass or integer.",
    bad="DO $$\nDECLARE stmt text := 'ANALYZE hrms.org_team';\nBEGIN\n    EXECUTE stmt;\nEND\n$$;\n",
    good="DO $$\nBEGIN\n    EXECUTE format('ANALYZE %I.%I', 'hrms', 'org_team');\nEND\n$$;\n",
    node_types=("DoStmt", "CreateFunctionStmt"),
    check=check,
    in_down_files=True,
)
