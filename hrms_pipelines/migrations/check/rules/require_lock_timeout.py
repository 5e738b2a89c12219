from hrms_pipelines.migrations.check.model import Rule, Severity
from hrms_pipelines.migrations.check.rules._locking import first_lock_without

check = first_lock_without("lock_timeout")


RULE = Rule(
    id="require-lock-timeout",
    severity=Severity.WARNING,
    squawk="require-lock-timeout",
    why="This statement runs with no lock_timeout: while it waits for its lock (behind any long "
        "query), every later query on the table queues behind it, which is how a harmless migration "
        "takes an application down.",
    fix="Migrations under sql/migrations get the runner's lock_timeout (10s) already; a standalone script "
        "starts with `SET lock_timeout = '10s';` -- and a migration must not turn it off (SET lock_timeout = 0, "
        "RESET).",
    bad="SET lock_timeout = 0;\nALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    good="ALTER TABLE hrms.org_team ADD COLUMN slack_channel text;\n",
    node_types=(),
    check=check,
    in_down_files=True,
)
