from hrms_pipelines.migrations.check.model import Hit, Rule, Severity


def check(stmt, state):
    yield Hit(stmt.start, f"Database {stmt.node.get('dbname')}.")


RULE = Rule(
    id="ban-drop-database",
    severity=Severity.DANGER,
    squawk="ban-drop-database",
    why="DROP DATABASE destroys a whole database; it has no place in a migration.",
    fix="Drop databases by hand, after a backup, outside the migration runner.",
    bad="DROP DATABASE hrms_old;\n",
    good="SELECT 1;\n",
    node_types=("DropdbStmt",),
    check=check,
)
