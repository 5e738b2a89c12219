"""Privilege escalation: CREATE EXTENSION of an extension outside the deployment's allow-list.

The allow-list lives here, in one place: DEFAULT_ALLOWED, extended by the deployment with
HRMS_ALLOWED_EXTENSIONS (comma-separated names; environment, never run config)."""

import os

from hrms_pipelines.migrations.check.model import Hit, Rule, Severity

ALLOWED_EXTENSIONS_ENV = "HRMS_ALLOWED_EXTENSIONS"
# Trusted, self-contained extensions an HR schema may reasonably use: no file, network or shell access,
# no untrusted procedural language.
DEFAULT_ALLOWED = frozenset({"pgcrypto", "pg_trgm", "btree_gist", "btree_gin", "citext", "plpgsql"})


def allowed_extensions() -> frozenset[str]:
    """DEFAULT_ALLOWED plus the names in HRMS_ALLOWED_EXTENSIONS."""
    extra = os.environ.get(ALLOWED_EXTENSIONS_ENV, "")
    return DEFAULT_ALLOWED | {name.strip().lower() for name in extra.split(",") if name.strip()}


def check(stmt, state):
    name = stmt.node.get("extname", "")
    allowed = allowed_extensions()
    if name.lower() not in allowed:
        yield Hit(stmt.start, f"Extension {name!r} is not on the allow-list ({', '.join(sorted(allowed))}).")


RULE = Rule(
    id="ban-unlisted-extension",
    severity=Severity.DANGER,
    escalation=True,
    why="An extension installs code that runs inside the server, often with superuser rights at install time: "
        "dblink and postgres_fdw open network connections, file_fdw and adminpack reach the server's files, "
        "untrusted languages (plpython3u, plperlu) run anything. Only extensions on the deployment's allow-list "
        "may be created by a migration; a suppression in the same file cannot allow another.",
    fix=f"Use an allowed extension ({', '.join(sorted(DEFAULT_ALLOWED))}); if the deployment really needs "
        f"another one, its administrator adds it to {ALLOWED_EXTENSIONS_ENV} (comma-separated) after review.",
    bad="CREATE EXTENSION IF NOT EXISTS dblink;\n",
    good="CREATE EXTENSION IF NOT EXISTS pg_trgm;\n",
    node_types=("CreateExtensionStmt",),
    check=check,
    in_down_files=True,
)
