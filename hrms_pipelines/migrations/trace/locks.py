"""PostgreSQL's table-level lock modes: how strong each is, which conflict, and what a lock held by a
migration blocks for everyone else (the table of "Explicit Locking" in PostgreSQL's manual)."""

from __future__ import annotations

# Weakest to strongest, as pg_locks names them.
MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
         "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")

CONFLICTS: dict[str, frozenset[str]] = {
    "AccessShareLock": frozenset({"AccessExclusiveLock"}),
    "RowShareLock": frozenset({"ExclusiveLock", "AccessExclusiveLock"}),
    "RowExclusiveLock": frozenset({"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}),
    "ShareUpdateExclusiveLock": frozenset({"ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock",
                                           "ExclusiveLock", "AccessExclusiveLock"}),
    "ShareLock": frozenset({"RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock",
                            "AccessExclusiveLock"}),
    "ShareRowExclusiveLock": frozenset({"RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
                                        "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}),
    "ExclusiveLock": frozenset(MODES[1:]),
    "AccessExclusiveLock": frozenset(MODES),
}

# What other sessions do on a table, and the lock each takes.
OPERATIONS = (
    ("reads", "SELECT", "AccessShareLock"),
    ("locking reads", "SELECT ... FOR UPDATE/SHARE", "RowShareLock"),
    ("writes", "INSERT, UPDATE, DELETE, COPY FROM", "RowExclusiveLock"),
    ("maintenance", "VACUUM, ANALYZE, CREATE INDEX CONCURRENTLY", "ShareUpdateExclusiveLock"),
    ("index builds", "CREATE INDEX", "ShareLock"),
    ("DDL", "ALTER TABLE, DROP, TRUNCATE", "AccessExclusiveLock"),
)


def sql_name(mode: str) -> str:
    """"AccessExclusiveLock" -> "ACCESS EXCLUSIVE", as LOCK TABLE and the manual write it."""
    words, word = [], ""
    for char in mode.removesuffix("Lock"):
        if char.isupper() and word:
            words.append(word)
            word = ""
        word += char
    words.append(word)
    return " ".join(words).upper()


def strength(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else -1


def strongest(modes) -> str | None:
    modes = [m for m in modes if m in MODES]
    return max(modes, key=strength) if modes else None


def blocked(mode: str) -> list[str]:
    """The kinds of operation (reads, writes, DDL, ...) another session must wait with while `mode` is held."""
    conflicts = CONFLICTS.get(mode, frozenset())
    return [kind for kind, _, needs in OPERATIONS if needs in conflicts]


def blocks_reads(mode: str) -> bool:
    return "AccessShareLock" in CONFLICTS.get(mode, frozenset())


def blocks_writes(mode: str) -> bool:
    return "RowExclusiveLock" in CONFLICTS.get(mode, frozenset())


def summary(mode: str) -> str:
    """One phrase a reviewer reads beside the lock."""
    if blocks_reads(mode):
        return "blocks reads, writes and DDL"
    if blocks_writes(mode):
        return "blocks writes and DDL (reads go on)"
    if mode == "ShareUpdateExclusiveLock":
        return "blocks DDL, VACUUM, ANALYZE (reads and writes go on)"
    return "blocks only DDL that needs a stronger lock (reads and writes go on)"
