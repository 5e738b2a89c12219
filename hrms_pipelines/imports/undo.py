"""Undo of a whole import run, from what its stages recorded (hrms_pipelines.imports.changes).

In ONE transaction, as the restorer (the import role cannot delete), under the imports and restore
locks, with the run's tables locked against writers (reads go on):

1. the run's succeeded import records and their undo entries are read;
2. it refuses, changing nothing, when a later import changed or removed a row the run changed or
   inserted (naming the rows, masked, and the later run: undo that run first), or when something
   other than an import changed such a row since (an undo would lose that change);
3. every stage, newest first: the rows it updated get their before-images back (full rows,
   updated_at included); then every row the run inserted, whatever stage inserted it, is removed in
   ONE statement over every table, so foreign keys are checked once, at its end (a placeholder
   leader the tribes file inserted and the users stage put in a team of teams.csv goes with the
   team); every put-back and every removal writes an audit row (action 'undo', the row before and after);
4. a row left behind that still references a removed row refuses the whole undo, naming it: in an
   import table with the run that wrote it (a later import's, or the HR application's); in another
   table (leave, payroll: the undo's role cannot read them) by its table, constraint and the row it
   references;
5. the run's import records are marked `undone`: the unchanged-file detection no longer counts
   them, so importing the same file again imports it again.

`dry_run` does all of it and rolls back, reporting what it would change (masked preview).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

from hrms_pipelines import locks, privacy
from hrms_pipelines.imports import changes, shortcuts
from hrms_pipelines.metadata import markdown_table

SHOWN = 10
SOURCE = "undo_import"


class UndoRefused(Exception):
    """The undo changed nothing; the message says why and what to do."""


@dataclass
class RecordUndo:
    record_id: int
    stage: str
    file_name: str
    restored: dict[str, int] = field(default_factory=dict)   # table -> rows put back
    removed: dict[str, int] = field(default_factory=dict)    # table -> rows removed


@dataclass
class UndoResult:
    run_id: str
    dry_run: bool
    records: list[RecordUndo] = field(default_factory=list)
    preview: list[list] = field(default_factory=list)        # [stage, table, action, row, field, now, after undo], masked
    seconds: float = 0.0
    full_reads: str = ""                                     # which files the next import reads in full (shortcuts)

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            for table, n in r.restored.items():
                out.setdefault(table, {"restored": 0, "removed": 0})["restored"] += n
            for table, n in r.removed.items():
                out.setdefault(table, {"restored": 0, "removed": 0})["removed"] += n
        return out

    def table_markdown(self) -> str:
        totals = self.totals()
        return markdown_table(["table", "rows put back (before-images)", "rows removed (inserted by the run)"],
                              [[t, totals[t]["restored"], totals[t]["removed"]] for t in changes.TABLES if t in totals])

    def records_markdown(self) -> str:
        return markdown_table(["import record", "stage", "file", "put back", "removed"],
                              [[f"#{r.record_id}", r.stage, r.file_name, sum(r.restored.values()), sum(r.removed.values())]
                               for r in self.records])


def _name(conn: psycopg.Connection, table: str, row_id: int) -> str:
    """A row as people know it (its natural key), masked; its id when it is gone."""
    keys = changes.NATURAL_KEYS[table]
    row = conn.execute(f"SELECT {', '.join(keys)} FROM hrms.{table} WHERE id = %s", [row_id]).fetchone()
    if row is None:
        return f"{table} #{row_id} (no longer there)"
    return f"{table} #{row_id} " + " / ".join(str(privacy.mask_cell(k, v, table)) for k, v in zip(keys, row))


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [f"hrms.{table}"]).fetchall()]


def _load(conn: psycopg.Connection, record_ids: list[int]) -> None:
    """The run's undo entries in temporary tables: _undo_ins (every inserted row) and _undo_upd (for
    each updated row not inserted by the run, the oldest before-image and the newest after-md5)."""
    conn.execute("""
        CREATE TEMP TABLE _undo_ins ON COMMIT DROP AS
        SELECT i.import_record_id AS record_id, i.table_name, i.id AS entry_id, unnest(i.row_ids) AS row_id
        FROM hrms.imports_undoinsert i WHERE i.import_record_id = ANY(%s)""", [record_ids])
    conn.execute("""
        CREATE TEMP TABLE _undo_upd ON COMMIT DROP AS
        SELECT u.import_record_id AS record_id, u.table_name, u.id AS entry_id, u.row_id, u.before, u.after_md5
        FROM hrms.imports_undoupdate u WHERE u.import_record_id = ANY(%s)""", [record_ids])
    conn.execute("CREATE INDEX ON _undo_ins (table_name, row_id)")
    conn.execute("CREATE INDEX ON _undo_upd (table_name, row_id)")
    conn.execute("ANALYZE _undo_ins")
    conn.execute("ANALYZE _undo_upd")


def _later_changes(conn: psycopg.Connection, run_id: str) -> list[str]:
    """Rows of this run that a later, not undone, import of another run updated: grouped by that run.
    "Later" is by import record id: a stage takes its record ids under the imports lock it holds
    until it commits, so their order is the order in which stages' changes landed."""
    rows = conn.execute("""
        WITH mine AS (
            SELECT table_name, row_id, min(record_id) AS record_id FROM (
                SELECT table_name, row_id, record_id FROM _undo_ins UNION ALL
                SELECT table_name, row_id, record_id FROM _undo_upd) x GROUP BY 1, 2
        )
        SELECT r.run_id, min(r.id), array_agg(DISTINCT r.stage || ' ' || r.file_name), l.table_name,
               array_agg(DISTINCT l.row_id ORDER BY l.row_id)
        FROM mine m JOIN hrms.imports_undoupdate l ON l.table_name = m.table_name AND l.row_id = m.row_id
             AND l.import_record_id > m.record_id
        JOIN hrms.imports_importrecord r ON r.id = l.import_record_id AND r.outcome = 'succeeded'
        WHERE r.run_id IS DISTINCT FROM %s
        GROUP BY r.run_id, l.table_name ORDER BY 2, 4""", [run_id]).fetchall()
    lines = []
    for later_run, _first, files, table, ids in rows:
        shown = ", ".join(_name(conn, table, i) for i in ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
        lines.append(f"run {later_run} ({', '.join(files)}) changed {len(ids)} of the same row(s) later: {shown}")
    return lines


def _changed_outside(conn: psycopg.Connection) -> list[str]:
    """Rows this run updated that are no longer as it left them, with no later import to explain it."""
    lines = []
    for table in changes.TABLES:
        ids = [r[0] for r in conn.execute(f"""
            SELECT DISTINCT ON (u.row_id) u.row_id, u.after_md5 = md5(t::text)::uuid AS same
            FROM _undo_upd u LEFT JOIN hrms.{table} t ON t.id = u.row_id
            WHERE u.table_name = %s AND NOT EXISTS (SELECT FROM _undo_ins i WHERE i.table_name = u.table_name AND i.row_id = u.row_id)
            ORDER BY u.row_id, u.entry_id DESC""", [table]).fetchall() if not r[1]]
        if ids:
            shown = ", ".join(_name(conn, table, i) for i in ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
            lines.append(f"{len(ids)} row(s) of {table} changed since the run by something other than an import "
                         f"(the HR application, a backfill, a restore): {shown}")
    return lines


def _restore(conn: psycopg.Connection, record: RecordUndo, undo_run_id: str | None, preview: list | None) -> None:
    """Put back the before-images of one import record's updated rows (not the rows the run inserted)."""
    for table in changes.TABLES:
        columns = [c for c in _columns(conn, table) if c != "id"]
        where = ("u.record_id = %(record)s AND u.table_name = %(table)s AND NOT EXISTS "
                 "(SELECT FROM _undo_ins i WHERE i.table_name = u.table_name AND i.row_id = u.row_id)")
        if preview is not None and len([p for p in preview if p[1] == table]) < SHOWN * 3:
            for now, then in conn.execute(
                    f"SELECT {changes.as_text('t')}, {changes.as_text(f'u.before::hrms.{table}')} "
                    f"FROM _undo_upd u JOIN hrms.{table} t ON t.id = u.row_id "
                    f"WHERE {where} ORDER BY u.row_id LIMIT {SHOWN}", {"record": record.record_id, "table": table}).fetchall():
                for column in columns:
                    if column not in ("updated_at",) and now.get(column) != then.get(column):
                        preview.append([record.stage, table, "put back", _name(conn, table, int(now["id"])), column,
                                        privacy.mask_cell(column, now.get(column), table), privacy.mask_cell(column, then.get(column), table)])
        count = conn.execute(f"""
            WITH src AS (
                SELECT u.row_id, u.record_id, (u.before::hrms.{table}).* FROM _undo_upd u WHERE {where}
            ), cur AS (
                SELECT t.* FROM hrms.{table} t WHERE t.id IN (SELECT row_id FROM src)
            ), upd AS (
                UPDATE hrms.{table} t SET ({', '.join(columns)}) = ({', '.join('s.' + c for c in columns)})
                FROM src s WHERE t.id = s.row_id RETURNING t.id
            ), audit AS (
                INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after, import_record_id)
                SELECT %(undo_run)s, %(source)s, 'undo', %(table)s, c.id::text, to_jsonb(c), to_jsonb(s) - 'record_id' - 'row_id',
                       s.record_id
                FROM cur c JOIN src s ON s.row_id = c.id
            )
            SELECT count(*) FROM upd""", {"record": record.record_id, "table": table, "undo_run": undo_run_id,
                                           "source": SOURCE}).fetchone()[0]
        if count:
            record.restored[table] = count


def _remove(conn: psycopg.Connection, records: list[RecordUndo], undo_run_id: str | None, preview: list | None) -> None:
    """Remove every row the run inserted, whatever stage inserted it, in ONE statement over every
    table: a placeholder leader inserted by the tribes file and put in a team by the users stage goes
    together with that team. The foreign keys (NO ACTION) are checked once, at the statement's end,
    so only rows that stay can block it."""
    tables = [r[0] for r in conn.execute("SELECT DISTINCT table_name FROM _undo_ins")]
    if not tables:
        return
    tables.sort(key=changes.TABLES.index)
    if preview is not None:
        for record in records:          # newest first, as the put-backs
            for table in tables:
                for (row_id,) in conn.execute(f"SELECT row_id FROM _undo_ins WHERE record_id = %s AND table_name = %s "
                                              f"ORDER BY row_id LIMIT {SHOWN}", [record.record_id, table]).fetchall():
                    preview.append([record.stage, table, "remove", _name(conn, table, row_id), "", "", ""])
    ctes = [f"d{i} AS (DELETE FROM hrms.{t} t WHERE t.id IN (SELECT row_id FROM _undo_ins WHERE table_name = '{t}') "
            f"RETURNING t.*)" for i, t in enumerate(tables)]
    audits = [f"SELECT '{t}' AS table_name, d.id, to_jsonb(d) AS row, d.import_record_id FROM d{i} d" for i, t in enumerate(tables)]
    rows = conn.execute(f"""
        WITH {', '.join(ctes)}, removed AS ({' UNION ALL '.join(audits)}), audit AS (
            INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after, import_record_id)
            SELECT %(undo_run)s, %(source)s, 'undo', table_name, id::text, row, NULL, import_record_id FROM removed
        )
        SELECT i.record_id, r.table_name, count(*) FROM removed r
        JOIN _undo_ins i ON i.table_name = r.table_name AND i.row_id = r.id GROUP BY 1, 2""",
                        {"undo_run": undo_run_id, "source": SOURCE}).fetchall()
    by_id = {r.record_id: r for r in records}
    for record_id, table, n in rows:
        by_id[record_id].removed[table] = n


def _blocked_by_other_table(conn: psycopg.Connection, exc: psycopg.errors.ForeignKeyViolation) -> str:
    """The refusal for a removal that a table outside the import tables blocks (the undo's role may
    not read those tables: the foreign key's own report names the table and the key)."""
    referenced = conn.execute("SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
                              [exc.diag.constraint_name, f"{exc.diag.schema_name or 'hrms'}.{exc.diag.table_name}"]).fetchone()
    key = re.search(r"Key \(id\)=\((\d+)\)", exc.diag.message_detail or "")
    target = referenced[0].split(".", 1)[-1] if referenced else None
    if target in changes.TABLES and key:
        row = _name(conn, target, int(key.group(1)))
    else:
        row = f"{target or 'a row'} ({exc.diag.message_detail})"
    return (f"rows of {exc.diag.schema_name or 'hrms'}.{exc.diag.table_name} (not an import table: the HR application's "
            f"data, constraint {exc.diag.constraint_name}) still reference {row}, which the run inserted. "
            "Remove or re-point those rows first, or keep the run.")


def _references_left(conn: psycopg.Connection) -> list[str]:
    """Rows that stay and still reference a row the undo would remove (after the before-images are
    back): among the import tables, named with the import run that wrote them."""
    lines = []
    for target in changes.TABLES:
        for ref_table, ref_cols, target_cols in conn.execute("""
                SELECT c.conrelid::regclass::text,
                       ARRAY(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
                             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY o),
                       ARRAY(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
                             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY o)
                FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = %s::regclass""", [f"hrms.{target}"]).fetchall():
            ref = ref_table.split(".", 1)[-1]
            if ref not in changes.TABLES:
                continue   # other tables (leave, payroll): the removal's foreign key check names them
            match = " AND ".join(f"r.{a} = t.{b}" for a, b in zip(ref_cols, target_cols))
            # who wrote the referencing row: the last import that updated it, else the one that inserted it
            rows = conn.execute(f"""
                SELECT r.id, t.id, coalesce((
                    SELECT lr.run_id FROM hrms.imports_undoupdate lu
                    JOIN hrms.imports_importrecord lr ON lr.id = lu.import_record_id AND lr.outcome = 'succeeded'
                    WHERE lu.table_name = %s AND lu.row_id = r.id ORDER BY lu.import_record_id DESC LIMIT 1), ir.run_id)
                FROM hrms.{ref} r JOIN hrms.{target} t ON {match}
                LEFT JOIN hrms.imports_importrecord ir ON ir.id = r.import_record_id
                WHERE t.id IN (SELECT row_id FROM _undo_ins WHERE table_name = %s)
                  AND r.id NOT IN (SELECT row_id FROM _undo_ins WHERE table_name = %s)
                ORDER BY r.id LIMIT {SHOWN + 1}""", [ref, target, ref]).fetchall()
            for ref_id, target_id, by_run in rows[:SHOWN]:
                lines.append(f"{_name(conn, ref, ref_id)} (written by run {by_run or 'outside any import'}) references "
                             f"{_name(conn, target, target_id)}, which the run inserted")
    return lines


def undo_run(conn: psycopg.Connection, run_id: str, *, undo_run_id: str | None = None, dry_run: bool = False,
             lock_timeout: str = "10s", log=None) -> UndoResult:
    """Undo the import run `run_id` (see the module docstring). `conn` logs in as the restorer and is
    outside any transaction. Raises UndoRefused (nothing changed) with the reason."""
    say = log or (lambda message: None)
    started = time.monotonic()
    result = UndoResult(run_id=run_id, dry_run=dry_run)

    class _Rollback(Exception):
        pass

    try:
        with conn.transaction():
            changes.pin_settings(conn)
            conn.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
            with locks.transaction_lock(conn, locks.RESTORE), locks.transaction_lock(conn, locks.IMPORTS):
                records = conn.execute(
                    "SELECT id, stage, file_name, outcome, undone_by_run FROM hrms.imports_importrecord WHERE run_id = %s ORDER BY id",
                    [run_id]).fetchall()
                todo = [r for r in records if r[3] == "succeeded"]
                if not todo:
                    undone = sorted({r[4] for r in records if r[3] == "undone"})
                    raise UndoRefused(
                        f"run {run_id} has no successful import to undo"
                        + (f": it was already undone by run(s) {', '.join(undone)}" if undone else
                           (f" (its import records: {', '.join(f'#{r[0]} {r[1]} {r[3]}' for r in records)})" if records else
                            ": no import record names it (is the run id right? a restore_backup may also have removed them)")))
                record_ids = [r[0] for r in todo]
                result.records = [RecordUndo(r[0], r[1], r[2]) for r in reversed(todo)]   # newest first
                _load(conn, record_ids)
                unrecorded = conn.execute(
                    "SELECT r.id, r.stage, r.file_name FROM hrms.imports_importrecord r WHERE r.id = ANY(%s) "
                    "AND r.inserted + r.updated > 0 AND NOT EXISTS (SELECT FROM _undo_ins i WHERE i.record_id = r.id) "
                    "AND NOT EXISTS (SELECT FROM _undo_upd u WHERE u.record_id = r.id)", [record_ids]).fetchall()
                if unrecorded:
                    raise UndoRefused(
                        f"undo of run {run_id} refused, nothing was changed: import record(s) "
                        + ", ".join(f"#{i} ({stage} {name})" for i, stage, name in unrecorded)
                        + " changed rows but kept no undo data (imported before change capture existed). "
                        "Restore a full backup of those tables taken before the run instead (restore_backup).")
                tables = [r[0] for r in conn.execute(
                    "SELECT table_name FROM _undo_ins UNION SELECT table_name FROM _undo_upd").fetchall()]
                if tables:
                    conn.execute(f"LOCK TABLE {', '.join('hrms.' + changes.bare(t) for t in tables)} IN EXCLUSIVE MODE")
                problems = _later_changes(conn, run_id)
                if problems:
                    raise UndoRefused(f"undo of run {run_id} refused, nothing was changed: a later import changed rows this run "
                                      "changed or inserted. Undo that later run first (undo_import with its run id), then this one:\n  - "
                                      + "\n  - ".join(problems))
                problems = _changed_outside(conn)
                if problems:
                    raise UndoRefused(f"undo of run {run_id} refused, nothing was changed: putting back the before-images "
                                      "would lose later changes:\n  - " + "\n  - ".join(problems)
                                      + "\nRestore a full backup instead, or make the change again after the undo by hand.")
                preview = result.preview if dry_run else None
                for record in result.records:      # every stage, newest first
                    _restore(conn, record, undo_run_id, preview)
                problems = _references_left(conn)
                if problems:
                    raise UndoRefused(f"undo of run {run_id} refused, nothing was changed: rows that stay still reference rows "
                                      "the run inserted. Undo the run that wrote them first:\n  - " + "\n  - ".join(problems))
                try:
                    with conn.transaction():
                        _remove(conn, result.records, undo_run_id, preview)
                except psycopg.errors.ForeignKeyViolation as exc:
                    raise UndoRefused(f"undo of run {run_id} refused, nothing was changed: {_blocked_by_other_table(conn, exc)}") from None
                marked = conn.execute(
                    "UPDATE hrms.imports_importrecord SET outcome = 'undone', undone_at = now(), undone_by_run = %s "
                    "WHERE id = ANY(%s) AND outcome = 'succeeded'", [undo_run_id, record_ids]).rowcount
                assert marked == len(record_ids), "an import record changed under the undo"
                result.full_reads = shortcuts.after_undo(conn, [r.stage for r in result.records], result.totals(),
                                                         undo_run_id, run_id)
                conn.execute(
                    "INSERT INTO hrms.core_auditlog (run_id, source, action, table_name, row_key, before, after, import_record_id) "
                    "SELECT %s, %s, 'undo', 'imports_importrecord', r.id::text, jsonb_build_object('outcome', 'succeeded'), "
                    "%s::jsonb, r.id FROM unnest(%s::bigint[]) AS r(id)",
                    [undo_run_id, SOURCE, Jsonb({"outcome": "undone", "undone_run": run_id}), record_ids])
                if dry_run:
                    raise _Rollback
    except _Rollback:
        pass
    except psycopg.errors.LockNotAvailable as exc:
        raise UndoRefused(f"undo of run {run_id} gave up waiting for its tables (lock_timeout {lock_timeout}): "
                          f"{exc.diag.message_primary}; nothing was changed") from None
    except locks.LockNotAvailable as exc:
        raise UndoRefused(f"undo of run {run_id} not started: {exc}") from None
    result.seconds = time.monotonic() - started
    say(("dry run, would undo: " if dry_run else "undone: ") + ", ".join(
        f"{t} put back {c['restored']}, removed {c['removed']}" for t, c in result.totals().items()) or "nothing")
    if result.full_reads:
        say(result.full_reads)
    return result
