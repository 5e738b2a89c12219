"""What makes a backfill wait between batches, and for how long: a busy database, standbys that fall
behind, and the sessions a batch made wait.

- **Busy** (`busy_reason`): more sessions inside a transaction than `max_active_backends`, or a lock
  wait longer than `max_lock_wait_ms` (run config, per backfill).
- **Replica lag** (`ReplicaWatch`): when the primary streams to standbys (`pg_stat_replication`, which
  also lists logical replication's subscribers: they count as standbys), no
  batch starts while any standby replays more than HRMS_BACKFILL_MAX_REPLICA_LAG seconds behind
  (deployment configuration, default 5). A standby's lag is the larger of what PostgreSQL measured
  (`replay_lag`) and how long ago the primary had written WAL the standby has not replayed yet (read
  from the primary's own WAL position, sampled at every check: a standby whose replay is stuck shows
  a lag that grows with the clock, even when PostgreSQL's measurement has nothing new to say). A
  standby that has replayed everything the primary had written when it was checked has no lag. A
  standby that disappears is waited for up to HRMS_BACKFILL_STANDBY_GONE_SECONDS (default 120), then
  the run fails with its checkpoint intact; a lag that stays over the limit fails the run after
  `max_busy_wait_seconds`. Reading another session's replay position needs pg_read_all_stats, which
  no duty holds (it also shows every session's query text): the import role calls
  hrms_monitor.standby_replay_lag(), a SECURITY DEFINER function of the NOLOGIN role hrms_monitor
  that holds it (roles.py), and that returns only each standby's name, state, replay position and
  measured lag, and the primary's WAL position. When hrms_monitor lacks pg_read_all_stats (a managed
  service's administrator on 16+ may not grant it) the run refuses to start on a primary with
  standbys rather than run blind, naming the grant to ask for.
- **Bystanders** (`blocked_by_me`): the sessions waiting on a lock the batch's transaction holds,
  counted just before it commits; engine.py shrinks the next batch and lengthens the pause when any.

Only time spent waiting counts as paused (`Waiter.paused_s`); the checks themselves do not.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from hrms_pipelines.backfills.registry import BackfillError, Options
from hrms_pipelines.roles import MONITOR_GRANT, MONITOR_ROLE, REPLAY_LAG_FUNCTION

MAX_REPLICA_LAG_ENV = "HRMS_BACKFILL_MAX_REPLICA_LAG"
"""Deployment configuration: seconds a standby may replay behind the primary before batches wait."""
DEFAULT_MAX_REPLICA_LAG = 5.0
STANDBY_GONE_ENV = "HRMS_BACKFILL_STANDBY_GONE_SECONDS"
"""Deployment configuration: how long a run waits for a standby that disconnected before failing."""
DEFAULT_STANDBY_GONE = 120.0
REPLICA_POLL_SECONDS = 0.5


class Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...


def _env_seconds(name: str, default: float) -> float:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw.removesuffix("s"))
    except ValueError:
        raise BackfillError(f"{name}={raw!r} is not a number of seconds (e.g. {default:g})") from None
    if not 0 < value <= 86_400:
        raise BackfillError(f"{name}={raw!r}: must be more than 0 and at most 86400 seconds")
    return value


def busy_reason(conn: psycopg.Connection, options: Options) -> str | None:
    """Why the database counts as busy right now, or None.

    Signals (each off when its option is None): other sessions of this database inside a transaction
    (`max_active_backends`: a running statement or an open transaction; read from pg_locks, which
    every role may see), and the longest current lock wait (`max_lock_wait_ms`).
    """
    if options.max_active_backends is None and options.max_lock_wait_ms is None:
        return None
    active, lock_wait_ms = conn.execute(
        """
        SELECT (SELECT count(*) FROM pg_stat_activity a
                WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                  AND EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'virtualxid' AND l.granted)),
               (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - l.waitstart) * 1000), 0)
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE NOT l.granted AND a.datname = current_database())
        """
    ).fetchone()
    if options.max_active_backends is not None and active > options.max_active_backends:
        return f"{active} active backends (limit {options.max_active_backends})"
    if options.max_lock_wait_ms is not None and lock_wait_ms > options.max_lock_wait_ms:
        return f"a session has waited {lock_wait_ms:.0f} ms for a lock (limit {options.max_lock_wait_ms} ms)"
    return None


def blocked_by_me(conn: psycopg.Connection) -> int:
    """Sessions waiting right now on a lock this session holds (inside the batch's transaction).

    Read from pg_locks, which is live: pg_stat_activity is a snapshot taken once per transaction."""
    return conn.execute(
        "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid() "
        "AND pg_backend_pid() = ANY (pg_blocking_pids(pid))").fetchone()[0]


# --- replica lag -------------------------------------------------------------------------------

# What the import role may read of its standbys: hrms_monitor.standby_replay_lag() (roles.py), a
# SECURITY DEFINER function of the NOLOGIN role hrms_monitor, which holds pg_read_all_stats; the import
# role itself holds no role (pg_read_all_stats would show it every session's query text).
_STANDBYS = f"""
    SELECT standby, state, replay_position, replay_lag_s, primary_position
    FROM {REPLAY_LAG_FUNCTION} ORDER BY 1"""
# Before the function exists (roles sql not run again since an upgrade): only whether there are standbys.
_ANY_STANDBY = "SELECT count(*) FROM pg_catalog.pg_stat_replication"


def _cannot_read(conn: psycopg.Connection, count: int, why: str) -> BackfillError:
    return BackfillError(
        f"the primary streams to {count} standby(s) but {conn.info.user} cannot read their replay position "
        f"({why}), so the backfill cannot keep them from falling behind; an administrator grants it with: "
        f"{MONITOR_GRANT} (python -m hrms_pipelines.roles sql). Nothing was changed.")


@dataclass
class Standby:
    name: str
    lag_s: float
    behind_bytes: float


@dataclass
class ReplicaWatch:
    """Tracks the standbys of the primary over one run (see the module docstring)."""

    max_lag_s: float
    gone_after_s: float
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(monotonic time, the primary's WAL position then), one per check."""
    last_seen: dict[str, float] = field(default_factory=dict)
    last_lag: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> ReplicaWatch:
        return cls(max_lag_s=_env_seconds(MAX_REPLICA_LAG_ENV, DEFAULT_MAX_REPLICA_LAG),
                   gone_after_s=_env_seconds(STANDBY_GONE_ENV, DEFAULT_STANDBY_GONE))

    def standbys(self, conn: psycopg.Connection) -> list[Standby]:
        if conn.execute("SELECT pg_catalog.to_regprocedure(%s) IS NULL", [REPLAY_LAG_FUNCTION]).fetchone()[0]:
            count = conn.execute(_ANY_STANDBY).fetchone()[0]
            if count:
                raise _cannot_read(conn, count, f"{REPLAY_LAG_FUNCTION} does not exist: run roles sql again")
            return []
        rows = conn.execute(_STANDBYS).fetchall()
        now = time.monotonic()
        if not rows:
            return []
        if any(state is None for _, state, *_ in rows):
            raise _cannot_read(conn, len(rows), f"{MONITOR_ROLE}, which reads it for {conn.info.user}, "
                                                "is not a member of pg_read_all_stats")
        current = rows[0][4]
        if not self.samples or self.samples[-1][1] != current:
            self.samples.append((now, current))
        result: dict[str, Standby] = {}
        oldest_replay = current
        for name, _state, replay, measured, _ in rows:
            if replay is not None:
                oldest_replay = min(oldest_replay, replay)
            if replay is None or replay >= current:
                lag, behind = 0.0, 0.0
            else:
                behind = current - replay
                first_unreplayed = next(t for t, lsn in self.samples if lsn > replay)
                lag = max(measured or 0.0, now - first_unreplayed)
            if name not in result or lag > result[name].lag_s:
                result[name] = Standby(name, lag, behind)
        self._forget_old_samples(oldest_replay)
        return list(result.values())

    def _forget_old_samples(self, oldest_replay: float) -> None:
        """Keep the samples still needed: from the newest one every standby has replayed past."""
        keep = 0
        for i, (_, lsn) in enumerate(self.samples):
            if lsn <= oldest_replay:
                keep = i
        del self.samples[:keep]

    def reason(self, conn: psycopg.Connection) -> str | None:
        """Why batches must wait for the standbys now, or None; raises when a gone standby stays gone."""
        now = time.monotonic()
        present = self.standbys(conn)
        reasons = []
        for standby in present:
            self.last_seen[standby.name] = now
            self.last_lag[standby.name] = standby.lag_s
            if standby.lag_s > self.max_lag_s:
                reasons.append(f"standby {standby.name} replays {standby.lag_s:.1f} s behind "
                               f"({standby.behind_bytes / 1e6:,.1f} MB of WAL; limit {self.max_lag_s:g} s, "
                               f"{MAX_REPLICA_LAG_ENV})")
        names = {s.name for s in present}
        for name, seen in sorted(self.last_seen.items()):
            if name in names:
                continue
            gone = now - seen
            if gone > self.gone_after_s:
                raise BackfillError(
                    f"standby {name} disconnected {gone:.0f} s ago (its last lag {self.last_lag.get(name, 0):.1f} s) and "
                    f"has not come back within {self.gone_after_s:g} s ({STANDBY_GONE_ENV}); stopped, the checkpoint "
                    "keeps the place: launch it again once replication is back (a new run waits only for the standbys "
                    "connected when it runs)")
            reasons.append(f"standby {name} disconnected {gone:.0f} s ago (last lag {self.last_lag.get(name, 0):.1f} s); "
                           f"waiting up to {self.gone_after_s:g} s for it to come back")
        return "; ".join(reasons) or None


# --- waiting -----------------------------------------------------------------------------------

@dataclass
class Waiter:
    """Waits before a batch while the database is busy or a standby is behind; counts the time paused."""

    options: Options
    name: str
    log: Log
    replicas: ReplicaWatch
    paused_s: float = 0.0
    replica_paused_s: float = 0.0
    busy_paused_s: float = 0.0

    def wait(self, conn: psycopg.Connection) -> float:
        """Return once no batch needs to wait; the seconds paused (0 when it went on at once)."""
        started: float | None = None
        last_log: float | None = None
        what = ""
        while True:
            replica = self.replicas.reason(conn)
            busy = busy_reason(conn, self.options) if replica is None else None
            reason = replica or busy
            if reason is None:
                break
            now = time.monotonic()
            if started is None:
                started, what = now, "replica lag" if replica else "database busy"
            waited = now - started
            if last_log is None or waited - last_log >= self.options.progress_every_seconds:
                last_log = waited
                self.log.info(f"backfill {self.name}: paused, {what}: {reason} ({waited:.1f} s so far)")
            if waited >= self.options.max_busy_wait_seconds:
                state = "a standby stayed behind" if replica else "the database stayed busy"
                raise BackfillError(
                    f"backfill {self.name}: {state} for {waited:.0f}s ({reason}; max_busy_wait_seconds "
                    f"{self.options.max_busy_wait_seconds:g}); stopped, the checkpoint keeps the place: launch it again later")
            time.sleep(REPLICA_POLL_SECONDS if replica else self.options.busy_pause_seconds)
        if started is None:
            return 0.0
        paused = time.monotonic() - started
        self.paused_s += paused
        if what == "replica lag":
            self.replica_paused_s += paused
        else:
            self.busy_paused_s += paused
        self.log.info(f"backfill {self.name}: resumed after {paused:.1f} s paused ({what})")
        return paused
