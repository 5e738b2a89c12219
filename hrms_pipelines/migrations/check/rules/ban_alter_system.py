"""Privilege escalation: ALTER SYSTEM rewrites the server's configuration."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity


def check(stmt, state):
    setting = stmt.node.get("setstmt", {})
    name = setting.get("name") or ("every setting" if setting.get("kind") == "VAR_RESET_ALL" else "?")
    yield Hit(stmt.start, f"ALTER SYSTEM changes {name} for the whole server (postgresql.auto.conf).")


RULE = Rule(
    id="ban-alter-system",
    severity=Severity.DANGER,
    escalation=True,
    why="ALTER SYSTEM rewrites the server's configuration for every database on it: logging (and so what an "
        "auditor sees), archive and restore commands that run shell commands, preload libraries. It belongs "
        "to whoever runs the server, never to a schema migration; a suppression in the same file cannot "
        "allow it.",
    fix="Change server settings in the deployment's configuration (postgresql.conf, the managed service's "
        "parameter group), reviewed there; a migration may use SET LOCAL for its own transaction.",
    bad="-- hrms:non-transactional\nALTER SYSTEM SET log_statement = 'none';\n",
    good="SET LOCAL work_mem = '64MB';\n",
    node_types=("AlterSystemStmt",),
    check=check,
    in_down_files=True,
)
