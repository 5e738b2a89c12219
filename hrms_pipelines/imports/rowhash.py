"""Full exports compare row by row in one set-based pass: only rows that differ go further.

Each staged row of a users or organisation file is compared, cells as written, with the stored row
it names rendered back into the file's shape (ids as the codes and emails they stand for, dates and
amounts as PostgreSQL prints them). Equal means every value the file gives is the value stored, so
the merge would change nothing: the row leaves the stage there, right after the in-file duplicate
checks (which see every row). References, cycles and the merge see only the rows that differ. A row
that writes a value another way than the database prints it (a trailing space, 'Active', '11.2' for
11.20, a blank where a value is stored) simply goes the full way and is found unchanged there.

This is the per-row hash comparison, with the row itself as its own hash. Measured on 100,000 users
(2 shared cores): the join alone 0.15 s; comparing the rows as written 0.54 s; with the cells
normalised first (trimmed, lower case, blanks kept blank) 0.92 s; md5 of each side 1.0 s,
hash_record_extended 1.3 s. An exact comparison also cannot collide. Nothing is stored: the
comparison is against the rows as they are now, so a change made since by anyone is seen.
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def raw_cells(columns: tuple[str, ...] | list[str], present: list[str], extra: list[str]) -> list[str]:
    """A file's cells as written (alias s), in `columns` order; NULL for a column the file lacks."""
    return [f"s.{sql.Identifier(c).as_string(None)}" if c in present and c not in extra else "NULL::text" for c in columns]


def keep_changed(conn: psycopg.Connection, staging: str, *, cells: list[str], render: str, rendered: list[str],
                 condition: str = "true") -> int:
    """Leave in `staging` only the rows that differ from the stored row they name.

    The staged rows stay whole in `{staging}_all`. `cells`: the file's cells (SQL over s);
    `render`: `<table> <alias> ON <key match over s> [LEFT JOIN ...]`, the stored row and whatever
    renders it; `rendered`: per cell, the stored value; `condition`: stored rows that may match (e.g.
    not a placeholder). Returns how many rows left (the stage counts them unchanged)."""
    total = conn.execute(f"SELECT count(*) FROM {staging}").fetchone()[0]
    conn.execute(f"ALTER TABLE {staging} RENAME TO {staging}_all")
    equal = f"ROW({', '.join(cells)}) IS NOT DISTINCT FROM ROW({', '.join(f'({r})::text' for r in rendered)})"
    kept = conn.execute(f"""
        CREATE TEMP TABLE {staging} ON COMMIT DROP AS
        SELECT s.* FROM {staging}_all s LEFT JOIN {render}
        WHERE NOT coalesce({condition} AND {equal}, false)""").rowcount
    return total - kept
