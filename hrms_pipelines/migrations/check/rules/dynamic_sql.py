"""Dynamic SQL the analyzer cannot read: EXECUTE of a statement built at run time, in a DO block
(it runs during the migration, as the migrator) or in a SECURITY DEFINER function (it runs later,
as the function's owner).

EXECUTE of a literal, of `format('<template>', ...)` or of a concatenation of literals and variables
is reconstructed and checked by the escalation rules (see _plpgsql); this rule reports the rest."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity
from hrms_pipelines.migrations.check.rules import _plpgsql


def check(stmt, state):
    if stmt.kind == "CreateFunctionStmt" and not _plpgsql.is_security_definer(stmt):
        return  # runs later with its caller's rights: what it executes is the caller's business
    for inner in stmt.inner or ():
        if inner.dynamic and inner.sql is None:
            yield Hit(inner.offset, f"In the {inner.context}: `{inner.shown}` runs a statement built at run time; "
                                    "the analyzer cannot see which one, so no rule checked it.")


RULE = Rule(
    id="dynamic-sql",
    severity=Severity.WARNING,
    why="EXECUTE of a string built at run time hides the statement from review and from every rule here, "
        "privilege escalations included (GRANT, ALTER ROLE, COPY ... PROGRAM), and runs with the migrator's "
        "rights.",
    fix="Write the statement out, or build it with format() from a literal template with %I for identifiers and "
        "%L for values (the analyzer reads the template and checks it); a reviewer reads what remains, and "
        "`-- hrms:allow dynamic-sql reason: <what it runs>` records that.",
    bad="DO $$\nDECLARE stmt text := 'ANALYZE hrms.org_team';\nBEGIN\n    EXECUTE stmt;\nEND\n$$;\n",
    good="DO $$\nBEGIN\n    EXECUTE format('ANALYZE %I.%I', 'hrms', 'org_team');\nEND\n$$;\n",
    node_types=("DoStmt", "CreateFunctionStmt"),
    check=check,
    in_down_files=True,
)
