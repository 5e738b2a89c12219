"""When an import may trust what earlier imports recorded, and what takes that trust away.

Three shortcuts skip reading a file on the word of earlier import records: a file whose sha256 and
options match a successful import is "unchanged" (records.previous_success, and the nightly
schedule's "no file changed"); a file that begins with the bytes of the last successful import of
its name has only its tail read (appends.previous_imports); lines already imported are known by
their hash (linehashes). Each holds only while the rows those records vouch for are still stored.

An undo_import removes or puts back rows an earlier record vouches for (a later file that contains
the undone rows says "unchanged" about them too), and so does a restore_backup. Both write a reset
(hrms.imports_shortcutreset, migration imports/0003) per stage they touch: no import record of that
stage up to the newest one at that moment vouches any more. The next import of a file of that kind
reads it in full and brings the tables back to what it says; its own record vouches again.

The reset is written in the undo's (the restore's) transaction, under the imports lock: no import
runs meanwhile, so "the newest record" is exact and a record written later always has a larger id.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

TABLE = "hrms.imports_shortcutreset"
STAGES = ("ladders", "org", "users", "history")

# Which stages write a table (the org stage creates placeholder users for leaders it names).
_WRITERS = {"ladders_": ("ladders",), "org_": ("org",), "employees_": ("users", "org"), "history_": ("history",)}


def vouches(alias: str) -> str:
    """SQL condition: import record `alias` (a row of hrms.imports_importrecord) may still vouch for
    what is stored -- no undo or restore reset its stage since it was written."""
    return f"NOT EXISTS (SELECT FROM {TABLE} x WHERE x.stage = {alias}.stage AND x.through_record >= {alias}.id)"


def epoch(conn: psycopg.Connection) -> int:
    """The newest reset's id (0 when none): the nightly schedule keys its run requests with it, so a
    night after an undo is never taken for the night before it."""
    return conn.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()[0]


def stages_of_tables(tables: Iterable[str]) -> list[str]:
    """The stages whose files vouch for rows of these tables ('hrms.history_timelineevent' or bare)."""
    found = set()
    for table in tables:
        bare = table.split(".", 1)[-1]
        for prefix, stages in _WRITERS.items():
            if bare.startswith(prefix):
                found.update(stages)
    return [s for s in STAGES if s in found]


def reset(conn: psycopg.Connection, stages: Iterable[str], *, reason: str, run_id: str | None) -> list[str]:
    """Take back what every import record of `stages` vouches for (inside the caller's transaction,
    under the imports lock). Returns the stages reset, in import order."""
    todo = [s for s in STAGES if s in set(stages)]
    if todo:
        conn.execute(
            f"INSERT INTO {TABLE} (stage, through_record, reason, run_id) "
            "SELECT s, (SELECT coalesce(max(id), 0) FROM hrms.imports_importrecord), %s, %s FROM unnest(%s::text[]) AS s",
            [reason, run_id, todo])
    return todo


def full_read_note(stages: Iterable[str]) -> str:
    """'the next import of users and history files will read them in full' (empty when none)."""
    names = [s for s in STAGES if s in set(stages)]
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (f"the next import of {listed} files will read them in full (an unchanged file, an appended file or a "
            "known line no longer skips what was removed or put back)")


def after_undo(conn: psycopg.Connection, stages: Iterable[str], tables: Iterable[str], undo_run_id: str | None,
               undone_run: str) -> str:
    """The reset an undo_import writes: the stages of the records it undid and of the tables it touched."""
    done = reset(conn, [*stages, *stages_of_tables(tables)], reason=f"undo_import of run {undone_run}", run_id=undo_run_id)
    return full_read_note(done)


def after_restore(conn: psycopg.Connection, changed_tables: Iterable[str], backup_id: str, run_id: str | None) -> str:
    """The reset a restore_backup writes when it changed any row: every stage (a restore puts back rows
    any file kind may vouch for; each file is read in full once)."""
    if not list(changed_tables):
        return ""
    done = reset(conn, STAGES, reason=f"restore_backup of backup {backup_id}", run_id=run_id)
    return full_read_note(done)
