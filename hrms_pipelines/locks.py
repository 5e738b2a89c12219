"""Named PostgreSQL advisory locks, so two runs of the same kind never interleave.

Every lock the project takes is listed here with its key, so no two features collide by accident.

Two ways to hold one:
- `session_lock`: for the whole session (migrations, restores, backfills, partition upkeep), waited
  for by polling outside any transaction;
- `TransactionLock.transaction`: for one transaction (an import stage, a dry run, a seed), taken as
  that transaction's first statement. While another run holds it, each try is a transaction of its
  own that ends at once, so the waiting run never sits inside a transaction (see `_try_in_transaction`).

A run that waits says whom it waits for (pid, application_name with the Dagster run id, since when)
and, when the wait is over, fails with one sentence (`LockNotAvailable`).
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg

# Class id of every HRMS advisory lock ("HRMS" as an int4); the second key is per lock name.
_LOCK_CLASS = 0x48524D53 - (1 << 31)

MIGRATIONS = "migrations"
IMPORTS = "imports"
SEEDS = "seeds"
AUDIT_PARTITIONS = "audit_partitions"
RESTORE = "restore"


def backfill_lock(name: str) -> str:
    return f"backfill:{name}"


class LockNotAvailable(Exception):
    pass


# How often a waiting run tries again, and how often it says again whom it waits for.
POLL_SECONDS = 0.25
REMIND_SECONDS = 60.0


def _key(name: str) -> int:
    return zlib.crc32(name.encode()) - (1 << 31)


def _seconds(interval: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*", interval)
    if not match:
        raise ValueError(f"unreadable wait {interval!r}: use e.g. 0, 500ms, 30s, 5min")
    return float(match[1]) * {"ms": 0.001, "s": 1, None: 1, "min": 60, "h": 3600}[match[2]]


@dataclass(frozen=True)
class LockWait:
    """How long to wait for a lock, as configured ("5min"), and the setting it came from."""

    text: str
    setting: str = ""

    def __post_init__(self) -> None:
        try:
            _seconds(self.text)
        except ValueError:
            where = f"{self.setting}={self.text!r}" if self.setting else repr(self.text)
            raise ValueError(f"{where} is not a duration: use e.g. 0, 500ms, 30s, 5min, 1h") from None

    @property
    def seconds(self) -> float:
        return _seconds(self.text)

    def __str__(self) -> str:
        return f"{self.setting}={self.text}" if self.setting else self.text


@dataclass(frozen=True)
class Holder:
    """A session holding an advisory lock, as much of it as this role may see."""

    pid: int
    application_name: str | None
    role: str | None
    xact_start: datetime | None
    xact_seconds: float | None

    def __str__(self) -> str:
        parts = [f"pid {self.pid}"]
        if self.application_name:
            parts.append(f"application_name '{self.application_name}'")
        if self.role:
            parts.append(f"role {self.role}")
        if self.xact_start is not None:
            started = self.xact_start.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            parts.append(f"in a transaction since {started} ({self.xact_seconds:.0f}s)")
        return ", ".join(parts)


def holders(conn: psycopg.Connection, name: str) -> list[Holder]:
    """Who holds the named lock: pid, application_name (`hrms_pipelines:<duty>[:<run id>]`), role and
    since when its transaction runs. What this role may not see of another role's session is None."""
    rows = conn.execute(
        """
        SELECT l.pid, a.application_name, a.usename, a.xact_start, extract(epoch FROM clock_timestamp() - a.xact_start)
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid::bigint = %s AND l.objid::bigint = %s
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY l.pid
        """,
        [_LOCK_CLASS & 0xFFFFFFFF, _key(name) & 0xFFFFFFFF],
    ).fetchall()
    return [Holder(pid, app, role, start, float(age) if age is not None else None) for pid, app, role, start, age in rows]


def describe(found: list[Holder]) -> str:
    return " and ".join(map(str, found)) if found else "a session that has just released it"


@dataclass(frozen=True)
class TransactionLock:
    """The advisory lock a transaction takes as its first statement, waiting up to `wait` for it.

    `log` hears whom the run waits for (again when the holder changes, and every minute); `run_id` goes into the
    transaction's application_name while it holds the lock (`hrms_pipelines:<duty>:<run id>`), so a
    run waiting for it can name this run.
    """

    name: str
    wait: LockWait = LockWait("0")
    log: Callable[[str], None] = lambda _message: None
    run_id: str | None = None

    @contextmanager
    def transaction(self, conn: psycopg.Connection, *, force_rollback: bool = False) -> Iterator[psycopg.Connection]:
        """A transaction on `conn` (idle, not autocommit) holding the lock: commits when the block
        ends (unless `force_rollback`), rolls back when it raises. Raises LockNotAvailable when the
        lock is still held after the wait, before anything of the block ran."""
        key = _key(self.name)
        started = time.monotonic()
        deadline = started + self.wait.seconds
        announced: tuple | None = None   # whom the log last said the run waits for, and when
        while True:
            with ExitStack() as attempt:
                attempt.enter_context(conn.transaction(force_rollback=force_rollback))
                if _try_in_transaction(conn, key, self.run_id):
                    held = attempt.pop_all()
                    break
                found = holders(conn, self.name)
            now = time.monotonic()
            if now >= deadline:
                raise LockNotAvailable(self._gave_up(describe(found)))
            who = tuple((h.pid, h.application_name) for h in found)
            if announced is None or announced[0] != who or now - announced[1] >= REMIND_SECONDS:
                waited = f" ({now - started:.0f}s so far)" if announced else ""
                self.log(f"waiting up to {self.wait.text}{self._setting} for the {self.name!r} lock{waited}, "
                         f"held by {describe(found)}")
                announced = (who, now)
            time.sleep(min(POLL_SECONDS, max(deadline - now, 0)))
        if announced is not None:
            self.log(f"got the {self.name!r} lock after waiting {time.monotonic() - started:.1f}s")
        with held:
            yield conn

    @property
    def _setting(self) -> str:
        return f" ({self.wait.setting})" if self.wait.setting else ""

    def _gave_up(self, holder: str) -> str:
        waited = f"after waiting {self.wait.text}{self._setting}" if self.wait.seconds else f"({self.wait}: no wait)"
        longer = f", or set {self.wait.setting} longer" if self.wait.setting else ""
        return (f"Another run still holds the {self.name!r} lock {waited}: {holder}; "
                f"try again when it has finished{longer}.")


def _try_in_transaction(conn: psycopg.Connection, key: int, run_id: str | None) -> bool:
    """Try the lock as the first statements of the transaction just begun on `conn`.

    Why a failed try ends its transaction instead of polling inside one: a session idle in a
    transaction after a parameterized statement still holds a snapshot (its backend_xmin stays set,
    even under READ COMMITTED), and CREATE INDEX CONCURRENTLY waits for every transaction with an
    older snapshot. A run polling inside its transaction would hold up every concurrent index build
    on the database for as long as it waits, and deadlock with a lock holder that builds one
    (hrms_pipelines_tests/test_import_lock_wait.py shows both). Between tries this session is idle,
    outside any transaction.

    READ COMMITTED is set first (a statement that takes no snapshot), whatever the role's default:
    every later statement of the transaction sees all that the previous holder committed.
    """
    conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, key]).fetchone()[0]
    if got and run_id:
        conn.execute("SELECT set_config('application_name', left(current_setting('application_name') || ':' || %s, 63), true)",
                     [run_id])
    return got


@contextmanager
def session_lock(conn: psycopg.Connection, name: str, *, wait: str = "0") -> Iterator[None]:
    """Hold the named lock on this connection's session for the block.

    `wait` is how long to wait for a holder to finish ("0": not at all, "5min": five minutes).
    The wait polls `pg_try_advisory_lock` outside any transaction: a session blocked inside a
    transaction would make the holder's CREATE INDEX CONCURRENTLY wait for it (a deadlock).
    """
    key = _key(name)
    deadline = time.monotonic() + _seconds(wait)
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_CLASS, key]).fetchone()[0]
        if not conn.autocommit:
            conn.commit()
        if got or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not got:
        raise LockNotAvailable(f"another run holds the {name!r} lock" + (f" (waited {wait})" if _seconds(wait) else ""))
    try:
        yield
    finally:
        if not conn.closed:
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_CLASS, key])
            if not conn.autocommit:
                conn.commit()


@contextmanager
def transaction_lock(conn: psycopg.Connection, name: str) -> Iterator[None]:
    """Take the named lock for the transaction `conn` is in, failing at once when another run holds it."""
    got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, _key(name)]).fetchone()[0]
    if not got:
        raise LockNotAvailable(f"another run holds the {name!r} lock ({describe(holders(conn, name))}); "
                               "try again when it has finished")
    yield
