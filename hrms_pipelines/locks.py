"""Named PostgreSQL advisory locks, so two runs of the same kind never interleave.

Every lock the project takes is listed here with its key, so no two features collide by accident.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

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


def _key(name: str) -> int:
    return zlib.crc32(name.encode()) - (1 << 31)


def _seconds(interval: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*", interval)
    if not match:
        raise ValueError(f"unreadable wait {interval!r}: use e.g. 0, 500ms, 30s, 5min")
    return float(match[1]) * {"ms": 0.001, "s": 1, None: 1, "min": 60, "h": 3600}[match[2]]


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
    """Take the named lock for the current transaction, failing at once when another run holds it."""
    got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, _key(name)]).fetchone()[0]
    if not got:
        raise LockNotAvailable(f"another run holds the {name!r} lock; try again when it has finished")
    yield
