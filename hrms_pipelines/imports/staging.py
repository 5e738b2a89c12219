"""SQL helpers over a staging table of text cells (optional columns may be absent from a file)."""

from __future__ import annotations

from psycopg import sql

from hrms_pipelines.imports.reader import FileInfo


def ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def cell(info: FileInfo, column: str, alias: str = "s") -> str:
    """The trimmed cell as text, NULL when blank or when the file has no such column."""
    if column not in info.columns or column in info.extra:
        return "NULL::text"
    return f"nullif(btrim({alias}.{ident(column)}), '')"


def email(info: FileInfo, column: str, alias: str = "s") -> str:
    """Emails are compared normalised: trimmed and lower case."""
    return f"lower({cell(info, column, alias)})"


def duplicates(table: str, key_sql: str, key_label: str, where: str = "true") -> str:
    """Reject query (row_number, column, value, rule) for every repeat of a key inside a file
    (a hash aggregate, no sort: cheap on millions of rows)."""
    return f"""
        WITH keyed AS (SELECT row_number, {key_sql} AS k FROM {table} WHERE {where}),
             d AS (SELECT k, min(row_number) AS first_row FROM keyed GROUP BY k HAVING count(*) > 1)
        SELECT keyed.row_number, '{key_label}', keyed.k::text,
               'duplicate key in this file (first seen on row ' || (d.first_row + 1) || ')'
        FROM keyed JOIN d ON d.k = keyed.k WHERE keyed.row_number <> d.first_row ORDER BY keyed.row_number
    """
