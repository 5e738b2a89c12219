"""Named PostgreSQL advisory locks, so two runs of the same kind never interleave.

Every lock the project takes is listed here with its key, so no two features collide by accident.
"""

from __future__ import annotations

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


@contextmanager
def session_lock(conn: psycopg.Connection, name: str, *, wait: str = "0") -> Iterator[None]:
    """Hold the named lock on this connection's session for the block.

    `wait` is how long to wait for a holder to finish ("0" means not at all, "5min" five minutes).
    """
    key = _key(name)
    if wait in ("0", "0s", "0ms"):
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_CLASS, key]).fetchone()[0]
    else:
        previous_autocommit = conn.autocommit
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [wait])
                # pg_advisory_lock's session lock survives the end of this transaction
                conn.execute("SELECT pg_advisory_lock(%s, %s)", [_LOCK_CLASS, key])
            got = True
        except psycopg.errors.LockNotAvailable:
            got = False
        finally:
            conn.autocommit = previous_autocommit
    if not conn.autocommit and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    if not got:
        raise LockNotAvailable(f"another run holds the {name!r} lock" + (f" (waited {wait})" if wait != "0" else ""))
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
