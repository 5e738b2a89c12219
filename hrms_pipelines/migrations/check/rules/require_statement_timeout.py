from hrms_pipelines.migrations.check.model import Rule, Severity
from hrms_pipelines.migrations.check.rules._locking import first_lock_without

check = first_lock_without("statement_timeout")


RULE = Rule(
    id="require-statement-timeout",
    severity=Severity.WARNING,
    squawk="require-statement-timeout",
    why="This statement runs with no statement_timeout: a rewrite or scan that takes longer than "
        "expected holds its lock for as long as it runs.",
    fix="Migrations under sql/migrations get the runner's statement_timeout (30s) already; a standalone "
        "script starts with `SET statement_timeout = '30s';` -- and a migration must not turn it off.",
    bad="SET statement_timeout = 0;\nALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    good="ALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    node_types=(),
    check=check,
    in_down_files=True,
)
