"""Concurrent index builds that converge: what the runner does around `CREATE INDEX CONCURRENTLY`.

A concurrent build that is interrupted (its backend terminated, the server killed, a lock or
statement timeout, a duplicate in a UNIQUE build) leaves the index behind, INVALID: PostgreSQL
created it in a first transaction and never finished it. `IF NOT EXISTS` then skips it on the next
run, and nothing rebuilds it. So, in a non-transactional migration, before (and after) each
`CREATE INDEX CONCURRENTLY` the runner looks for an INVALID index of that name on that table, drops
it with `DROP INDEX CONCURRENTLY` and builds it again; and it writes the ledger row only once every
index the file creates is valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
from pglast import parser as pg_parser
from psycopg import sql

from hrms_pipelines.migrations.files import Statement

BUILD_ATTEMPTS = 2  # the build, and one rebuild when it left an INVALID index behind


@dataclass(frozen=True)
class IndexBuild:
    """A `CREATE INDEX` statement that names its index."""

    name: str
    schema: str | None  # the table's schema as written (None: the search_path decides, as for the build)
    table: str
    concurrent: bool

    @property
    def table_ref(self) -> str:
        """The table as to_regclass() reads it, quoted like the statement means it."""
        ident = sql.Identifier(*(p for p in (self.schema, self.table) if p))
        return ident.as_string(None)


def _only_statement(statement: Statement, keyword: str, node_type: str) -> dict | None:
    """The parse tree of `statement` when it is one statement of `node_type` (cheaply skipped when
    `keyword` is not in its text); None otherwise, or when it does not parse."""
    if keyword not in statement.sql.lower():
        return None
    try:
        tree = json.loads(pg_parser.parse_sql_json(statement.sql))
    except pg_parser.ParseError:
        return None
    stmts = tree.get("stmts", ())
    if len(stmts) != 1 or node_type not in stmts[0]["stmt"]:
        return None
    return stmts[0]["stmt"][node_type]


def index_build(statement: Statement) -> IndexBuild | None:
    """The index a statement builds, when it is a `CREATE INDEX ... name ON table`."""
    node = _only_statement(statement, "index", "IndexStmt")
    if node is None:
        return None
    if not node.get("idxname"):
        return None  # an unnamed index gets a generated name: nothing to recognise on a re-run
    relation = node.get("relation", {})
    return IndexBuild(name=node["idxname"], schema=relation.get("schemaname"), table=relation["relname"],
                      concurrent=bool(node.get("concurrent")))


INDEX_STATE = """
SELECT i.indexrelid::regclass::text, i.indisvalid AND i.indisready
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass(%s) AND c.relname = %s
"""


def state(conn: psycopg.Connection, build: IndexBuild) -> tuple[str, bool] | None:
    """(qualified name, valid) of the index of that name on that table; None when there is none."""
    row = conn.execute(INDEX_STATE, [build.table_ref, build.name]).fetchone()
    return (row[0], bool(row[1])) if row else None


def drop_invalid(conn: psycopg.Connection, build: IndexBuild, log) -> str | None:
    """Drop (concurrently) an INVALID index of that name left by an earlier attempt; its name when one was."""
    found = state(conn, build)
    if found is None or found[1]:
        return None
    log(f"dropping INVALID index {found[0]} left by an interrupted concurrent build; it is built again")
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(found[0])))
    return found[0]


def invalid_among(conn: psycopg.Connection, builds: list[IndexBuild]) -> list[str]:
    """The indexes of `builds` that exist and are not valid (a file's ledger row waits for them)."""
    out = []
    for build in builds:
        found = state(conn, build)
        if found is not None and not found[1]:
            out.append(found[0])
    return out


# ------------------------------------------------------------------------------------------------
# REINDEX CONCURRENTLY
#
# An interrupted `REINDEX ... CONCURRENTLY` leaves the copy it was building, `<index>_ccnew` (or
# `_ccnew1`, ...), INVALID; interrupted after the swap, the old index, `<index>_ccold`, INVALID. A
# re-run would build yet another copy beside it (`_ccnew1`) and never drop the first. So before (and,
# when it fails on a live connection, after) the statement the runner drops (concurrently) every
# INVALID `_ccnew`/`_ccold` index of what it reindexes, and the ledger row waits until none is left.


@dataclass(frozen=True)
class Reindex:
    """A `REINDEX ... CONCURRENTLY` statement: what it reindexes."""

    kind: str  # "index", "table", "schema", "database", "system"
    schema: str | None
    name: str | None  # the index, table or schema; None for the database

    def leftover_filter(self) -> tuple[str, list]:
        """The WHERE clause (over pg_index i, pg_class c, pg_namespace n) that picks this reindex's objects."""
        ref = sql.Identifier(*(p for p in (self.schema, self.name) if p)).as_string(None) if self.name else None
        if self.kind == "index":
            return "i.indrelid = (SELECT indrelid FROM pg_index WHERE indexrelid = to_regclass(%s))", [ref]
        if self.kind == "table":
            return "i.indrelid = to_regclass(%s)", [ref]
        if self.kind == "schema":
            return "n.nspname = %s", [self.name]
        return "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'", []


def reindex(statement: Statement) -> Reindex | None:
    """What a statement reindexes, when it is a `REINDEX ... CONCURRENTLY`."""
    node = _only_statement(statement, "reindex", "ReindexStmt")
    if node is None:
        return None
    params = {p.get("DefElem", {}).get("defname") for p in node.get("params", ())}
    if "concurrently" not in params:
        return None
    kind = node.get("kind", "").removeprefix("REINDEX_OBJECT_").lower()
    relation = node.get("relation") or {}
    return Reindex(kind=kind, schema=relation.get("schemaname"), name=relation.get("relname") or node.get("name"))


LEFTOVERS = """
SELECT i.indexrelid::regclass::text
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT (i.indisvalid AND i.indisready) AND c.relname ~ '_cc(new|old)[0-9]*$' AND {}
ORDER BY 1
"""


def reindex_leftovers(conn: psycopg.Connection, target: Reindex) -> list[str]:
    """The INVALID `_ccnew`/`_ccold` indexes an interrupted REINDEX CONCURRENTLY of `target` left."""
    where, params = target.leftover_filter()
    return [r[0] for r in conn.execute(LEFTOVERS.format(where), params).fetchall()]


def drop_reindex_leftovers(conn: psycopg.Connection, target: Reindex, log) -> list[str]:
    """Drop (concurrently, one by one) what an interrupted REINDEX CONCURRENTLY of `target` left."""
    dropped = reindex_leftovers(conn, target)
    for name in dropped:
        log(f"dropping INVALID index {name} left by an interrupted REINDEX CONCURRENTLY; the statement runs again")
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(name)))
    return dropped
