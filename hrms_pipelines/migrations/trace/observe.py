"""Watching each statement the runner runs on the scratch database (a runner Observer).

Inside a transaction (a transactional migration, or a BEGIN in the file) the trace asks the
statement's own session, before and after it: the locks it holds (pg_locks of its backend), each
relation's relfilenode (a new one: rewritten), the whole-table reads of the transaction
(pg_stat_xact_user_tables.seq_scan), the indexes and constraints there are and whether they are valid.

A statement the runner runs alone (autocommit, in a non-transactional file) would release its locks
before anyone could look, so the trace runs it in BEGIN ... COMMIT, which PostgreSQL treats the same
way for locking. A statement that cannot run in a transaction block (CREATE INDEX CONCURRENTLY,
DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, DETACH PARTITION CONCURRENTLY, VACUUM) runs exactly as
the runner runs it, outside any transaction, while a probe session (the scratch cluster's superuser,
its search_path pinned) holds a lock on the tables it names that the statement must wait for: ROW
EXCLUSIVE, which every CONCURRENTLY command waits for at its first wait point (after taking its own
locks), or, for VACUUM and ANALYZE, which wait for no writer, SHARE UPDATE EXCLUSIVE, which their own
lock request conflicts with. The statement is then held there by the probe for as long as the probe
wants: no clock decides. Once pg_locks shows the statement waiting, the probe reads its backend's locks
once more (nothing it took before the wait can have gone: it is stuck), then lets it go and keeps
reading until it ends.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
from pglast import parser as pg_parser
from psycopg import sql

from hrms_pipelines.migrations import execute
from hrms_pipelines.migrations.files import Migration, MigrationFile, Statement
from hrms_pipelines.migrations.trace import model

FIRST_NORMAL_OID = 16384  # below it: the system catalogs and what initdb made

# Before a transaction's first traced statement: the whole-table reads each table has had so far in
# this backend (pending statistics, not yet flushed); later statements keep the count up to date.
SCANS = f"""
SELECT coalesce(json_object_agg(oid, n), '{{}}') FROM (
  SELECT c.oid::bigint AS oid, pg_stat_get_xact_numscans(c.oid) AS n FROM pg_class c
  WHERE c.oid >= {FIRST_NORMAL_OID} AND c.relkind IN ('r', 'm')) counts
WHERE n > 0
"""

# After each statement, in its own session: the relation locks it holds and, of each locked relation, its
# relfilenode, whole-table reads, size and (an index) validity: a rewrite, a scan or a new index needs a
# lock, which a transaction keeps to its end; and the constraints this transaction added to a locked
# table. One round trip, no catalogue scan.
AFTER = f"""
WITH held AS (
  SELECT l.relation AS oid, l.mode FROM pg_locks l
  WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation >= {FIRST_NORMAL_OID})
SELECT
  (SELECT coalesce(json_agg(json_build_array(h.oid::bigint, h.mode, n.nspname || '.' || c.relname, c.relkind::text,
                                             c.relfilenode::bigint, pg_stat_get_xact_numscans(c.oid),
                                             greatest(c.reltuples, 0)::bigint, i.indisvalid AND i.indisready)), '[]')
     FROM held h JOIN pg_class c ON c.oid = h.oid JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_index i ON i.indexrelid = h.oid
     WHERE n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg_temp%%'),
  (SELECT coalesce(json_agg(json_build_array(k.oid::bigint, k.conrelid::regclass::text || '.' || k.conname,
                                             k.convalidated)), '[]')
     FROM pg_constraint k WHERE k.conrelid IN (SELECT oid FROM held) AND k.contype IN ('c', 'f', 'u', 'p', 'x')
       AND k.xmin = xid(pg_current_xact_id_if_assigned()))
"""
COMMITTED_FILES = "SELECT oid::bigint, relfilenode::bigint FROM pg_class WHERE oid = ANY(%s)"
# Which relations existed before a migration: OIDs come from one counter that only grows (it would wrap
# after four billion objects, which a scratch cluster never sees), so everything created later has a
# larger OID than every relation there was. A rewrite keeps the OID (it changes the relfilenode).
NEWEST_OID = "SELECT coalesce(max(oid)::bigint, 0) FROM pg_class"
# Every lock of the statement's backend, from one read of the lock manager: the relation locks, and
# whether it waits for any lock (a relation, or another transaction: CONCURRENTLY's wait for writers).
PROBE_LOCKS = """
SELECT l.locktype = 'relation' AND l.relation >= %s AND coalesce(n.nspname, '') <> 'pg_toast',
       l.relation::bigint, l.mode, l.granted, coalesce(n.nspname || '.' || c.relname, 'oid ' || l.relation),
       c.relkind::text, greatest(c.reltuples, 0)::bigint
FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s
"""
PROBE_TABLES = """
SELECT DISTINCT coalesce(i.indrelid, c.oid)::regclass::text
FROM unnest(%s::text[]) AS name CROSS JOIN LATERAL (SELECT to_regclass(name) AS oid) r
JOIN pg_class c ON c.oid = r.oid LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'i', 'I', 'm')
"""

KINDS = {"r": "table", "p": "partitioned table", "i": "index", "I": "partitioned index", "m": "materialized view"}
# Only a safety net against a statement that waits for something else than the probe (nothing else runs on
# the scratch cluster): the probe lets go as soon as the statement waits for it, however long that takes.
PROBE_WAIT_SECONDS = 600.0


class TraceObserver(execute.Observer):
    """Records a StatementTrace for every statement of the migrations it traces."""

    def __init__(self, probe: psycopg.Connection, *, traced: set[tuple[str, str]] | None, per_file_baseline: bool,
                 display) -> None:
        self.probe = probe  # the scratch cluster's superuser, autocommit, on the scratch database
        self.traced = traced  # None: every migration the runner applies
        self.per_file_baseline = per_file_baseline  # no database: each file sees every earlier one as applied
        self.display = display  # path -> how reports show it
        self.statements: list[model.StatementTrace] = []
        self.migrations: list[str] = []
        self.current: Migration | None = None
        self.newest_existing: int | None = None  # relations with an OID up to this one existed before the migration
        self._tx: _Transaction | None = None  # what the current transaction has done so far

    # -- the runner's hooks ----------------------------------------------------------------------

    def migration(self, migration: Migration, direction: str) -> None:
        self.current = migration if (self.traced is None or migration.key in self.traced) else None
        if self.current is not None:
            self.migrations.append(migration.label)
        if self.newest_existing is None or self.per_file_baseline:
            self.newest_existing = self.probe.execute(NEWEST_OID).fetchone()[0]
        self._tx = None  # a transactional migration is one transaction of its own

    def statement(self, conn, file: MigrationFile, statement: Statement, run, *, transactional: bool) -> None:
        if self.current is None or execute.TRANSACTION_CONTROL.match(statement.sql.lstrip()):
            self._tx = None  # BEGIN / COMMIT in a non-transactional file: a new transaction
            run()
            return
        trace = model.StatementTrace(
            migration=self.current.label, path=self.display(file.path), line=statement.line,
            end_line=statement.line + statement.sql.rstrip().count("\n"), sql=_excerpt(statement.sql),
            transaction=model.IN_FILE_TRANSACTION)
        self.statements.append(trace)
        try:
            if transactional or conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                trace.transaction = model.IN_FILE_TRANSACTION if transactional else model.IN_OWN_TRANSACTION
                self._in_session(conn, trace, run)
            else:
                self._alone(conn, trace, run, statement.sql)
        except psycopg.Error as exc:
            trace.error = (exc.diag.message_primary or str(exc)).strip()
            raise

    # -- inside a transaction: the session looks at itself ----------------------------------------

    def _in_session(self, conn, trace: model.StatementTrace, run) -> None:
        if self._tx is None:
            self._tx = _Transaction(scans={int(k): v for k, v in conn.execute(SCANS, prepare=False).fetchone()[0].items()})
        started = time.perf_counter()
        try:
            run()
        finally:
            trace.duration_ms = (time.perf_counter() - started) * 1000
        self._record(conn, trace)

    def _alone(self, conn, trace: model.StatementTrace, run, text: str) -> None:
        """A statement the runner runs alone: in BEGIN ... COMMIT, or, when PostgreSQL refuses that,
        outside any transaction under the probe."""
        trace.transaction = model.ALONE
        self._tx = None
        conn.execute("BEGIN")
        try:
            self._in_session(conn, trace, run)
        except psycopg.errors.ActiveSqlTransaction:  # "cannot run inside a transaction block"
            conn.execute("ROLLBACK")
            trace.transaction = model.OUTSIDE_TRANSACTION
            trace.scanned = None
            self._probed(conn, trace, run, text)
            return
        except BaseException:
            if not conn.closed:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._tx = None

    def _record(self, conn, trace: model.StatementTrace) -> None:
        tx = self._tx
        locks, constraints = conn.execute(AFTER, prepare=False).fetchone()
        unknown = [row[0] for row in locks if self._existed(row[0]) and row[0] not in tx.files and row[3] in "rim"]
        if unknown:  # their relfilenode before this transaction: the probe sees what is committed
            tx.files.update(dict(self.probe.execute(COMMITTED_FILES, [unknown]).fetchall()))
        rewritten, scanned, created = set(), set(), {}
        for oid, mode, name, kind, node, scans, rows, valid in sorted(locks, key=lambda row: row[2]):
            existing = self._existed(oid)
            trace.locks.append(model.HeldLock(relation=name, kind=KINDS.get(kind, kind), mode=mode,
                                              new=(oid, mode) not in tx.locks, existing=existing,
                                              rows=rows if existing and kind in "rpm" else None))
            tx.locks.add((oid, mode))
            if existing and kind in "rim" and tx.files.get(oid, node) != node:
                rewritten.add(name)
            if existing and scans > tx.scans.get(oid, 0):
                scanned.add(name)
            if not existing and kind in "iI" and oid not in tx.indexes:
                created[oid] = (name, bool(valid))
            tx.files[oid] = node
            tx.scans[oid] = scans
        trace.rewritten, trace.scanned = sorted(rewritten), sorted(scanned)
        trace.created_indexes = sorted(created.values())
        tx.indexes.update(created)
        trace.created_constraints = sorted((name, bool(ok)) for oid, name, ok in constraints if oid not in tx.constraints)
        tx.constraints.update(oid for oid, _, _ in constraints)

    def _existed(self, oid: int) -> bool:
        return self.newest_existing is not None and oid <= self.newest_existing

    # -- outside any transaction: the probe watches ------------------------------------------------

    def _probed(self, conn, trace: model.StatementTrace, run, text: str) -> None:
        before = {oid: node for oid, node in self.probe.execute(
            f"SELECT oid::bigint, relfilenode::bigint FROM pg_class WHERE oid >= {FIRST_NORMAL_OID}").fetchall()}
        indexes_before = {r[0] for r in self.probe.execute(
            f"SELECT indexrelid::bigint FROM pg_index WHERE indexrelid >= {FIRST_NORMAL_OID}").fetchall()}
        tables = [r[0] for r in self.probe.execute(PROBE_TABLES, [_named_relations(text)]).fetchall()]
        pid = conn.info.backend_pid
        seen: dict[tuple[int, str], tuple[str, str, bool, int | None]] = {}
        errors: list[BaseException] = []

        def work() -> None:
            try:
                run()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the runner's thread below
                errors.append(exc)

        held_for = 0.0
        mode = _probe_mode(text)
        self.probe.execute("BEGIN")
        try:
            for table in tables:
                self.probe.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.SQL(table), sql.SQL(mode)))
            worker = threading.Thread(target=work, name="hrms-trace-statement")
            started = time.perf_counter()
            worker.start()
            while worker.is_alive():
                if self._sample(pid, seen):
                    # Stuck behind the probe until it lets go: a second read sees every lock taken before the
                    # wait (the first one may have read the fast-path locks just before the last was taken).
                    self._sample(pid, seen)
                    break
                if time.perf_counter() - started > PROBE_WAIT_SECONDS:
                    break
                time.sleep(0.001)
            held_for = time.perf_counter() - started
        finally:
            self.probe.execute("COMMIT")  # the statement goes on
        while worker.is_alive():
            self._sample(pid, seen)
            time.sleep(0.002)
        worker.join()
        trace.duration_ms = max(0.0, (time.perf_counter() - started - held_for) * 1000)
        if errors:
            raise errors[0]
        for (oid, mode), (name, kind, granted, rows) in sorted(seen.items(), key=lambda item: item[1][0]):
            trace.locks.append(model.HeldLock(relation=name, kind=KINDS.get(kind, kind or "relation"), mode=mode,
                                              existing=self._existed(oid), granted=granted,
                                              rows=rows if self._existed(oid) and kind in "rpm" else None))
        after = dict(self.probe.execute(
            f"SELECT oid::bigint, relfilenode::bigint FROM pg_class WHERE oid >= {FIRST_NORMAL_OID}").fetchall())
        changed = [oid for oid, node in after.items() if self._existed(oid) and oid in before and before[oid] != node]
        if changed:
            trace.rewritten = sorted(r[1] for r in self.probe.execute(
                "SELECT c.oid, n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = ANY(%s) AND c.relkind IN ('r', 'i', 'm')", [changed]).fetchall())
        created = self.probe.execute(
            f"SELECT i.indexrelid::regclass::text, i.indisvalid AND i.indisready FROM pg_index i "
            f"WHERE i.indexrelid >= {FIRST_NORMAL_OID} AND NOT (i.indexrelid::bigint = ANY(%s))", [list(indexes_before)]
        ).fetchall()
        trace.created_indexes = sorted((name, bool(valid)) for name, valid in created)

    def _sample(self, pid: int, seen: dict) -> bool:
        """Record the statement's relation locks (held, or asked for), from one read of pg_locks; True when
        that same read shows it waiting for a lock."""
        waiting = False
        for relation, oid, mode, granted, name, kind, rows in self.probe.execute(
                PROBE_LOCKS, [FIRST_NORMAL_OID, pid]).fetchall():
            waiting = waiting or not granted
            if not relation:
                continue
            key = (oid, mode)
            if key not in seen or (granted and not seen[key][2]):
                seen[key] = (name, kind or "", granted, rows)
        return waiting


class _Transaction:
    """What the traced transaction has done up to the last statement: locks taken, relfilenodes and
    scan counts seen, indexes and constraints created (each statement reports only what is new)."""

    def __init__(self, scans: dict[int, int]) -> None:
        self.scans = scans
        self.files: dict[int, int] = {}
        self.locks: set[tuple[int, str]] = set()
        self.indexes: set[int] = set()
        self.constraints: set[int] = set()


def _probe_mode(text: str) -> str:
    """The lock the probe holds so that the statement must wait for it: VACUUM and ANALYZE wait for no
    writer, so the probe takes the lock their own request conflicts with; every CONCURRENTLY command
    waits for the writers (ROW EXCLUSIVE) after taking its locks."""
    try:
        tree = json.loads(pg_parser.parse_sql_json(text))
    except pg_parser.ParseError:
        return "ROW EXCLUSIVE"
    kinds = {next(iter(raw["stmt"])) for raw in tree.get("stmts", ())}
    return "SHARE UPDATE EXCLUSIVE" if "VacuumStmt" in kinds else "ROW EXCLUSIVE"


def _named_relations(text: str) -> list[str]:
    """Tables and indexes a statement names (an index stands for its table in the probe)."""
    names = execute.relations_of(text)
    try:
        tree = json.loads(pg_parser.parse_sql_json(text))
    except pg_parser.ParseError:
        return names
    for raw in tree.get("stmts", ()):
        drop = raw["stmt"].get("DropStmt", {})
        for obj in drop.get("objects", ()):
            items = obj.get("List", {}).get("items", ())
            names.append(".".join(i["String"]["sval"] for i in items if "String" in i))
    return names


def _excerpt(text: str) -> str:
    flat = " ".join(line.strip() for line in text.strip().splitlines() if not line.strip().startswith("--"))
    return flat[:140] + ("…" if len(flat) > 140 else "")
