"""Operators' rough edges (issue 14): a restore killed with `kill -9` leaves no listed pre-restore
backup, and a full disk under the backup folder ends in a clear error, not a bare errno.

Both run the code in a child process, the way the faults happen. The full disk is a real one: a
256 KiB tmpfs mounted over the backup root in a private mount namespace of the child (`unshare -m`:
the machine's mounts are left alone and the mount goes with the child). It needs CAP_SYS_ADMIN (the
tests and CI run as root here); elsewhere that variant is skipped. (A user namespace, `unshare -Urm`,
would need no root, but inside it the database's socket, owned by an unmapped user, is out of reach.) A second variant, which works everywhere, caps the size of
any file the child writes (RLIMIT_FSIZE, SIGXFSZ ignored: the write fails with EFBIG, "File too
large"), standing in for a quota."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hrms_pipelines import backups
from hrms_pipelines.backups import fs
from hrms_pipelines.resources import READER
from hrms_pipelines_tests.backup_helpers import (  # noqa: F401  (fixtures)
    TABLES, audit_rows, backup_dirs, backup_root, conn, digests, mutate, populated, reader, restorer,
)

KILLED_RESTORE = textwrap.dedent("""
    import sys, time
    from hrms_pipelines import backups
    from hrms_pipelines.backups import export, restore
    from hrms_pipelines.resources import RESTORER, PinnedDatabase

    url, backup_id, root, where = sys.argv[1:5]

    def pause(*args, **kwargs):
        print("PAUSED", flush=True)
        time.sleep(600)

    if where == "staging":          # inside the transaction, the pre-restore backup written
        restore._load_staging = pause
    else:                           # committed, its pre-restore backup not yet published
        export.PendingBackup.publish = pause
    with PinnedDatabase(location=url).connection(RESTORER, autocommit=True) as conn:
        backups.restore_backup(conn, backup_id, backup_root=root, run_id="killed")
""")


def run_until_paused_then_kill(tmp_path: Path, args: list[str]) -> None:
    script = tmp_path / "child.py"
    script.write_text(KILLED_RESTORE)
    child = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ))
    try:
        deadline, seen = time.monotonic() + 120, b""
        while b"PAUSED" not in seen:
            ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready or child.poll() is not None:
                raise AssertionError(f"the child never paused: {child.stderr.read().decode()[-3000:]}")
            seen += os.read(child.stdout.fileno(), 4096)
        child.send_signal(signal.SIGKILL)  # kill -9
    finally:
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def pending(root: Path) -> list[str]:
    return [p.name for p in fs.pending_dirs(root)]


def test_a_restore_killed_mid_way_leaves_no_listed_pre_restore_backup(populated, reader, restorer, hrms_db,
                                                                       backup_root, database_url, tmp_path):
    conn = populated
    manifest = backups.take_backup(reader, TABLES, label="import_users", run_id="r1", backup_root=backup_root)
    mutate(conn)
    before = digests(conn)

    run_until_paused_then_kill(tmp_path, [database_url, manifest.backup_id, str(backup_root), "staging"])
    assert digests(conn) == before and audit_rows(conn) == 0  # PostgreSQL rolled the transaction back
    # the pre-restore backup it had written is not a backup: never listed, never restorable
    assert [m.backup_id for m in backups.list_backups(backup_root)] == [manifest.backup_id]
    assert backup_dirs(backup_root) == sorted([manifest.backup_id] + pending(backup_root))
    [leftover] = pending(backup_root)
    with pytest.raises(backups.BackupError, match="unknown backup id"):
        backups.load_manifest(leftover.removeprefix(fs.PENDING_PREFIX), backup_root)
    # and the next restore job (or prune) clears it away: its restore never committed
    with hrms_db.connection(READER) as audit_reader:
        settled = backups.settle_pending(audit_reader, backup_root)
    assert [(s.name, s.action) for s in settled] == [(leftover, "removed")]
    assert "rolled back" in settled[0].why
    assert backup_dirs(backup_root) == [manifest.backup_id]
    # nothing is in the way of doing it properly now
    result = backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)
    assert [m.backup_id for m in backups.list_backups(backup_root)] == sorted(
        [manifest.backup_id, result.pre_restore_backup_id], reverse=True)


def test_a_restore_killed_after_its_commit_keeps_its_pre_restore_backup(populated, reader, hrms_db, backup_root,
                                                                       database_url, tmp_path):
    conn = populated
    manifest = backups.take_backup(reader, TABLES, label="import_users", run_id="r1", backup_root=backup_root)
    original = digests(conn)
    mutate(conn)
    run_until_paused_then_kill(tmp_path, [database_url, manifest.backup_id, str(backup_root), "published"])
    assert digests(conn) == original and audit_rows(conn) == len(TABLES)  # the restore committed
    assert [m.backup_id for m in backups.list_backups(backup_root)] == [manifest.backup_id]
    with hrms_db.connection(READER) as audit_reader:
        [settled] = backups.settle_pending(audit_reader, backup_root)
    assert settled.action == "published" and settled.why == "its restore committed"
    pre = backups.list_backups(backup_root)[0]
    assert pre.label == f"pre-restore of {manifest.backup_id}"
    assert f"pre-restore of {manifest.backup_id}" == pre.label and pre.backup_id != manifest.backup_id


# --------------------------------------------------------------------------------------------------
# A full disk


FULL_DISK = textwrap.dedent("""
    import json, os, resource, signal, sys
    import psycopg
    from hrms_pipelines import backups
    from hrms_pipelines.resources import READER, RESTORER, PinnedDatabase

    url, root, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = PinnedDatabase(location=url)
    out = {}
    with db.connection(READER, autocommit=True) as conn:   # fits: a few kilobytes
        small = backups.take_backup(conn, ["history_timelineevent"], label="import_history", run_id="small",
                                    backup_root=root)
    with psycopg.connect(url) as admin:                      # then the table grows past the free space
        admin.execute("INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary) "
                      "SELECT 1, 'note', date '2030-01-01' + g, (SELECT string_agg(md5(random()::text || g || i), '') "
                      "FROM generate_series(1, 8) i) FROM generate_series(1, 6000) g")
        out["digest"] = admin.execute("SELECT count(*), md5(string_agg(t::text, '' ORDER BY id)) "
                                      "FROM hrms.history_timelineevent t").fetchone()
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    with db.connection(READER, autocommit=True) as conn:
        try:
            backups.take_backup(conn, ["history_timelineevent"], label="import_history", run_id="big", backup_root=root)
        except backups.BackupError as exc:
            out["backup"] = f"{type(exc).__name__}: {exc}"
    with db.connection(RESTORER, autocommit=True) as conn:
        try:
            backups.restore_backup(conn, small.backup_id, backup_root=root, run_id="full")
        except backups.BackupError as exc:
            out["restore"] = f"{type(exc).__name__}: {exc}"
    out["left"] = sorted(os.listdir(root))
    out["small"] = small.backup_id
    print(json.dumps(out))
""")


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.parametrize("disk", ["tmpfs", "file size limit"])
def test_a_full_disk_says_where_how_much_and_that_the_hr_tables_are_untouched(populated, database_url, tmp_path, disk):
    conn = populated
    root = tmp_path / "small-disk"
    root.mkdir(mode=0o700)
    script = tmp_path / "child.py"
    script.write_text(FULL_DISK)
    command = [sys.executable, str(script), database_url, str(root)]
    if disk == "tmpfs":
        if not _namespaces_work():
            pytest.skip("a private mount namespace (unshare -m) needs CAP_SYS_ADMIN")
        command = ["unshare", "-m", "sh", "-c",
                   'mount -t tmpfs -o size=256k,mode=0700 tmpfs "$HRMS_TEST_SMALL_DISK" && exec "$@"', "sh",
                   *command, "0"]
        reason = "No space left on device"
    else:
        command += [str(256 << 10)]
        reason = "File too large"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HRMS_TEST_SMALL_DISK=str(root)))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    backup = out["backup"]
    assert backup.startswith("BackupDiskFull: backup ") and "(import_history) could not be written" in backup
    assert f"the disk under the backup folder {root} is full ({reason}) after " in backup
    assert "bytes of encrypted data were written" in backup and "nothing was written to the HR tables" in backup
    assert "Errno" not in backup

    restore = out["restore"]
    assert restore.startswith("BackupDiskFull: ") and f"(pre-restore of {out['small']})" in restore
    assert f"the disk under the backup folder {root} is full ({reason})" in restore
    assert "nothing was written to the HR tables (the restore's transaction was rolled back)" in restore
    # nothing was: the table is as the child left it before the restore, no audit row, no leftovers
    digest = conn.execute("SELECT count(*), md5(string_agg(t::text, '' ORDER BY id)) FROM hrms.history_timelineevent t").fetchone()
    assert list(digest) == out["digest"] and audit_rows(conn) == 0
    assert out["left"] == [out["small"]]
