"""Backups and verified restore, against the real (embedded) PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import dagster as dg
import psycopg
import pytest
import yaml

from hrms_pipelines import backups, locks, settings
from hrms_pipelines.backups import BackupError, crypto
from hrms_pipelines_tests.backup_helpers import (  # noqa: F401  (fixtures)
    AWKWARD_TEXT, TABLES, backup_dirs, backup_root, conn, decrypt, digests, mutate, populated, reader, replace_file,
    restorer, sign_again, table_digest,
)


def test_round_trip_is_exact_and_undoable(populated, reader, restorer, backup_root):
    conn = populated
    original = digests(conn)
    manifest = backups.take_backup(reader, TABLES, label="before import", run_id="3f2a9c1e-aaaa-bbbb", backup_root=backup_root)
    assert manifest.backup_id.endswith("-3f2a9c1e")
    assert {t.table: t.rows for t in manifest.tables}["hrms.history_timelineevent"] == len(AWKWARD_TEXT)

    mutate(conn)
    mutated = digests(conn)
    assert mutated != original

    result = backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root, run_id="run-restore-1")
    assert digests(conn) == original
    counts = result.counts()
    assert (counts["hrms.org_organization"].updated, counts["hrms.org_organization"].inserted) == (1, 0)
    assert counts["hrms.org_team"].deleted == 1
    assert counts["hrms.employees_employee"].deleted == 1 and counts["hrms.employees_employee"].updated == 1
    assert counts["hrms.history_timelineevent"].inserted == 1 and counts["hrms.history_timelineevent"].deleted == 1
    assert counts["hrms.history_compensationsnapshot"].inserted == 1
    assert counts["hrms.ladders_ladder"].updated == 2 and counts["hrms.ladders_ladder"].unchanged == 0
    # an untouched row is left alone, even one whose long (compressed, toasted) value is read back from a file
    assert (counts["hrms.org_tribe"].unchanged, counts["hrms.org_tribe"].updated) == (1, 0)
    assert counts["hrms.history_timelineevent"].updated == 1  # jsonb 1.10 -> 1.1 and a microsecond are changes

    # one audit row per table, action 'restore', with the run id and the counts
    audit = conn.execute(
        "SELECT table_name, row_key, run_id, after->>'deleted' FROM hrms.core_auditlog WHERE action = 'restore' ORDER BY table_name"
    ).fetchall()
    assert [a[0] for a in audit] == sorted(TABLES)
    assert {a[1] for a in audit} == {manifest.backup_id} and {a[2] for a in audit} == {"run-restore-1"}

    # sequences were not lowered: a new row gets an id no restored or removed row ever had
    with conn.transaction(force_rollback=True):
        new_id = conn.execute(
            "INSERT INTO hrms.ladders_level (ladder_id, level_number, title) VALUES (2, 2, 'x') RETURNING id").fetchone()[0]
    assert new_id > 4

    # the pre-restore backup holds the mutated state: restoring it undoes the restore
    pre = result.pre_restore_backup
    assert pre is not None and pre.label == f"pre-restore of {manifest.backup_id}"
    assert pre.backup_id in backup_dirs(backup_root)
    backups.restore_backup(restorer, pre.backup_id, backup_root=backup_root, pre_restore_backup=False)
    assert digests(conn) == mutated


def test_folder_and_files_are_private_and_manifest_is_truthful(populated, reader, restorer, backup_root):
    old_umask = os.umask(0o022)
    try:
        manifest = backups.take_backup(reader, TABLES[:3], label="perm", run_id=None, backup_root=backup_root)
    finally:
        os.umask(old_umask)
    assert manifest.backup_id.endswith("-manual")
    assert stat.S_IMODE(manifest.directory.stat().st_mode) == 0o700
    files = sorted(manifest.directory.iterdir())
    assert [f.name for f in files] == ["hrms.org_department.csv.gz.age", "hrms.org_organization.csv.gz.age",
                                       "hrms.org_tribe.csv.gz.age", "manifest.json", "manifest.sig"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)

    data = json.loads((manifest.directory / "manifest.json").read_text())
    assert data["backup_id"] == manifest.backup_id and data["label"] == "perm"
    assert "password" not in json.dumps(data)
    entry = data["tables"][1]
    assert entry["table"] == "hrms.org_department" and entry["rows"] == 2
    assert [c["name"] for c in entry["columns"]][:3] == ["id", "code", "name"]
    content = decrypt(manifest.directory / entry["file"]).decode()
    assert entry["csv_bytes"] == len(content.encode())
    assert content.splitlines()[0] == "id,code,name,organization_id,import_record_id,created_at,updated_at"
    assert 'IT & ""Digital""' in content
    metadata = manifest.to_metadata()
    assert metadata["backup_id"].value == manifest.backup_id
    assert metadata["backup_rows hrms.org_department"].value == 2
    assert metadata["backup_total_bytes"].value == sum(e["bytes"] for e in data["tables"])
    assert [m.backup_id for m in backups.list_backups(backup_root)] == [manifest.backup_id]
    # no key material anywhere in the folder or the metadata: only the public recipient
    keys = [p.read_bytes() for p in settings.keys_dir().iterdir() if p.name != "backup-recipients.txt"]
    secrets = [line.split()[-1].encode() for k in keys for line in k.decode().splitlines() if line and not line.startswith("#")]
    assert secrets and not any(secret in f.read_bytes() for f in files for secret in secrets)
    assert not any(secret.decode() in str(v.value) for v in metadata.values() for secret in secrets)
    assert data["encryption"]["recipients"] == [str(r) for r in crypto.recipients()]


def test_two_backups_in_the_same_second_get_distinct_ids(populated, reader, restorer, backup_root):
    first = backups.take_backup(reader, ["org_tribe"], label="a", run_id="abcdef12", backup_root=backup_root)
    second = backups.take_backup(reader, ["org_tribe"], label="b", run_id="abcdef12", backup_root=backup_root)
    assert first.backup_id != second.backup_id
    assert {m.backup_id for m in backups.list_backups(backup_root)} == {first.backup_id, second.backup_id}


def test_tampered_file_is_refused_and_nothing_changes(populated, reader, restorer, backup_root):
    conn = populated
    manifest = backups.take_backup(reader, TABLES, label="t", run_id="r1", backup_root=backup_root)
    mutate(conn)
    before = digests(conn)
    victim = manifest.directory / "hrms.employees_employee.csv.gz.age"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    with pytest.raises(BackupError, match=r"hrms\.employees_employee\.csv\.gz\.age fails its checksum"):
        backups.verify_backup(backups.load_manifest(manifest.backup_id, backup_root))
    with pytest.raises(BackupError, match=r"hrms\.employees_employee\.csv\.gz\.age fails its checksum.*refusing to restore"):
        backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)
    assert digests(conn) == before
    assert backup_dirs(backup_root) == [manifest.backup_id]  # no pre-restore backup was taken
    assert conn.execute("SELECT count(*) FROM hrms.core_auditlog").fetchone()[0] == 0


def test_partial_backups_are_refused(populated, reader, restorer, backup_root):
    conn = populated
    complete = backups.take_backup(reader, TABLES[:2], label="ok", run_id="r1", backup_root=backup_root)
    partial = backups.take_backup(reader, TABLES[:2], label="cut short", run_id="r2", backup_root=backup_root)
    (partial.directory / "manifest.json").unlink()  # as if the process died before writing it

    assert [m.backup_id for m in backups.list_backups(backup_root)] == [complete.backup_id]
    with pytest.raises(BackupError, match=rf"backup {partial.backup_id} is partial: .* no manifest\.json"):
        backups.restore_backup(restorer, partial.backup_id, backup_root=backup_root)

    (complete.directory / "hrms.org_department.csv.gz.age").unlink()
    with pytest.raises(BackupError, match=r"hrms\.org_department\.csv\.gz\.age is missing"):
        backups.restore_backup(restorer, complete.backup_id, backup_root=backup_root)
    assert backup_dirs(backup_root) == sorted([complete.backup_id, partial.backup_id])


def test_unknown_backup_id_is_refused_with_the_list(populated, reader, restorer, backup_root):
    first = backups.take_backup(reader, ["org_tribe"], label="a", run_id="aaaa1111", backup_root=backup_root)
    second = backups.take_backup(reader, ["org_team"], label="b", run_id="bbbb2222", backup_root=backup_root)
    with pytest.raises(BackupError) as error:
        backups.load_manifest("20990101T000000Z-nothere", backup_root)
    assert "unknown backup id '20990101T000000Z-nothere'" in str(error.value)
    assert first.backup_id in str(error.value) and second.backup_id in str(error.value)
    for bad in ["../../etc", "20990101T000000Z-x/../../y", ""]:
        with pytest.raises(BackupError, match="is not a backup id"):
            backups.restore_backup(restorer, bad, backup_root=backup_root)
    with pytest.raises(BackupError, match="there are no backups in"):
        backups.load_manifest("20990101T000000Z-nothere", backup_root / "empty")


def test_a_failure_midway_leaves_every_table_as_it_was(populated, reader, restorer, backup_root):
    """The backup lacks a ladder that a table outside the backup (employees) now uses: the restore's
    last check fails after the earlier tables were already rewritten, and all of it is rolled back."""
    conn = populated
    manifest = backups.take_backup(reader, ["hrms.org_organization", "hrms.org_tribe", "hrms.ladders_ladder"],
                                   label="t", run_id="r1", backup_root=backup_root)
    conn.execute("UPDATE hrms.org_organization SET name = 'changed'")
    conn.execute("UPDATE hrms.org_tribe SET name = 'changed too'")
    conn.execute("INSERT INTO hrms.ladders_ladder (id, code, name) VALUES (50, 'NEW', 'New ladder')")
    conn.execute("UPDATE hrms.employees_employee SET ladder_id = 50, level_number = NULL WHERE id = 3")
    before = digests(conn)

    with pytest.raises(BackupError) as error:
        backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)
    message = str(error.value)
    assert "employees_employee" in message and "ladders_ladder" in message and "Nothing was changed" in message
    assert digests(conn) == before
    assert backup_dirs(backup_root) == [manifest.backup_id]  # the pre-restore backup went with the rollback
    assert conn.execute("SELECT count(*) FROM hrms.core_auditlog").fetchone()[0] == 0


def test_a_bad_row_in_a_later_file_rolls_back_the_earlier_tables(populated, reader, restorer, backup_root):
    """A backup whose checksums are right but whose second table's rows break a CHECK constraint
    (a manifest rewritten by hand): the first table was already staged, nothing is kept."""
    conn = populated
    manifest = backups.take_backup(reader, ["hrms.org_organization", "hrms.ladders_level"], label="t", run_id="r1",
                                   backup_root=backup_root)
    conn.execute("UPDATE hrms.org_organization SET name = 'changed'")
    before = digests(conn)
    data = json.loads((manifest.directory / "manifest.json").read_text())
    text = decrypt(manifest.directory / data["tables"][1]["file"]).replace(b",4500.00,6000.50,", b",7000.00,6000.50,")
    replace_file(manifest.directory, data, 1, text)
    sign_again(manifest.directory, data)  # as if by someone holding the service's keys

    with pytest.raises(BackupError, match=r"refused by the database: .*ladders_level.*check constraint"):
        backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)
    assert digests(conn) == before


def test_symlinks_and_path_traversal_are_refused(populated, reader, restorer, backup_root, tmp_path):
    conn = populated
    manifest = backups.take_backup(reader, ["org_organization", "org_tribe"], label="t", run_id="r1", backup_root=backup_root)
    # a data file replaced by a symlink to an identical copy elsewhere: refused all the same
    victim = manifest.directory / "hrms.org_tribe.csv.gz.age"
    outside = tmp_path / "elsewhere.csv.gz.age"
    outside.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(BackupError, match=r"hrms\.org_tribe\.csv\.gz\.age cannot be opened safely.*symlinks"):
        backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)

    # a (correctly signed) manifest naming a file outside its folder
    data = json.loads((manifest.directory / "manifest.json").read_text())
    for evil in ["../../etc/passwd", "/etc/passwd", "sub/hrms.org_tribe.csv.gz.age", ".hidden.csv.gz.age"]:
        data["tables"][1]["file"] = evil
        sign_again(manifest.directory, data)
        with pytest.raises(BackupError, match="is not a plain backup file name"):
            backups.load_manifest(manifest.backup_id, backup_root)
    # a manifest naming a table outside the HR schema
    data["tables"][1].update(file="hrms.org_tribe.csv.gz.age", table="pg_catalog.pg_authid")
    sign_again(manifest.directory, data)
    with pytest.raises(BackupError, match="outside the 'hrms' schema"):
        backups.load_manifest(manifest.backup_id, backup_root)

    # a backup folder that is a symlink to another folder is not a backup
    linked = backup_root / "20990101T000000Z-linked"
    linked.symlink_to(manifest.directory)
    with pytest.raises(BackupError, match="unknown backup id"):
        backups.load_manifest(linked.name, backup_root)


def test_dry_run_reports_and_changes_nothing(populated, reader, restorer, backup_root):
    conn = populated
    manifest = backups.take_backup(reader, TABLES, label="t", run_id="r1", backup_root=backup_root)
    mutate(conn)
    before = digests(conn)
    result = backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root, dry_run=True)
    assert result.dry_run and result.pre_restore_backup is None
    assert result.counts()["hrms.employees_employee"].deleted == 1
    assert digests(conn) == before
    assert backup_dirs(backup_root) == [manifest.backup_id]
    assert conn.execute("SELECT count(*) FROM hrms.core_auditlog").fetchone()[0] == 0


def test_restore_waits_for_no_import(populated, reader, restorer, backup_root, database_url):
    manifest = backups.take_backup(reader, ["org_tribe"], label="t", run_id="r1", backup_root=backup_root)
    with psycopg.connect(database_url, autocommit=True) as importer, locks.session_lock(importer, locks.IMPORTS):
        with pytest.raises(BackupError, match="not started: another run holds the 'imports' lock"):
            backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)


def test_restore_refuses_a_changed_schema_and_bad_arguments(populated, reader, restorer, backup_root):
    conn = populated
    manifest = backups.take_backup(reader, ["org_tribe"], label="t", run_id="r1", backup_root=backup_root)
    conn.execute("ALTER TABLE hrms.org_tribe ADD COLUMN motto text")
    with pytest.raises(BackupError, match=r"hrms\.org_tribe has changed since the backup"):
        backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)
    with pytest.raises(BackupError, match="does not exist"):
        backups.take_backup(reader, ["hrms.no_such_table"], label="t", run_id=None, backup_root=backup_root)
    with pytest.raises(BackupError, match="only tables of the 'hrms' schema"):
        backups.take_backup(reader, ["pg_catalog.pg_class"], label="t", run_id=None, backup_root=backup_root)
    reader.autocommit = False
    reader.execute("SELECT 1")
    with pytest.raises(BackupError, match="outside any transaction"):
        backups.take_backup(reader, ["org_tribe"], label="t", run_id=None, backup_root=backup_root)
    reader.rollback()


# --------------------------------------------------------------------------------------------------
# The restore_backup job


def test_restore_job_in_process(populated, reader, restorer, hrms_db, backup_root, monkeypatch):
    from hrms_pipelines.backups.jobs import restore_backup as restore_job

    monkeypatch.setenv("HRMS_BACKUP_DIR", str(backup_root))
    manifest = backups.take_backup(reader, TABLES, label="t", run_id="r1")
    assert manifest.directory.parent == backup_root
    mutate(populated)
    before = digests(populated)

    config = {"ops": {"verify_backup_files": {"config": {"backup_id": manifest.backup_id, "dry_run": True}}}}
    result = restore_job.execute_in_process(run_config=config, resources={"hrms_db": hrms_db})
    assert result.success
    assert digests(populated) == before
    events = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == "restore_tables"]
    shown = events[0].event_specific_data.metadata
    assert shown["dry_run"].value is True and shown["rows_deleted"].value == 4

    bad = {"ops": {"verify_backup_files": {"config": {"backup_id": "20990101T000000Z-nothere"}}}}
    failed = restore_job.execute_in_process(run_config=bad, resources={"hrms_db": hrms_db}, raise_on_error=False)
    assert not failed.success
    failure = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert manifest.backup_id in failure.event_specific_data.error.message


def test_restore_job_through_dagster_cli(populated, reader, restorer, subprocess_env, project_root, backup_root, tmp_path):
    manifest = backups.take_backup(reader, TABLES, label="t", run_id="r1", backup_root=backup_root)
    original = digests(populated)
    mutate(populated)
    config = tmp_path / "restore.yaml"
    config.write_text(yaml.safe_dump({"ops": {"verify_backup_files": {"config": {"backup_id": manifest.backup_id}}}}))
    env = dict(subprocess_env, HRMS_BACKUP_DIR=str(backup_root), HRMS_KEYS_DIR=str(settings.keys_dir()))
    done = subprocess.run(
        [str(project_root / ".venv/bin/dagster"), "job", "execute", "-m", "hrms_pipelines", "-j", "restore_backup", "-c", str(config)],
        env=env, cwd=project_root, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert digests(populated) == original
    assert len(backup_dirs(backup_root)) == 2  # the backup and the pre-restore backup
    assert populated.execute("SELECT count(*) FROM hrms.core_auditlog WHERE action = 'restore'").fetchone()[0] == len(TABLES)


def test_restore_job_is_in_the_definitions_and_the_writer_pool():
    from hrms_pipelines.definitions import defs
    from hrms_pipelines import settings

    job = defs.resolve_job_def("restore_backup")
    assert job.graph.node_named("restore_tables").definition.pool == settings.WRITER_POOL
    assert isinstance(job, dg.JobDefinition)


def test_rows_replaced_under_references_from_outside_the_backup(populated, reader, restorer, backup_root):
    """Only the employees are backed up; history rows (not in the backup) point at them. Replacing
    a changed employee keeps its key, so those references stay valid and the restore goes through."""
    conn = populated
    manifest = backups.take_backup(reader, ["employees_employee"], label="t", run_id="r1", backup_root=backup_root)
    original = table_digest(conn, "hrms.employees_employee")
    history = digests(conn, ["hrms.history_timelineevent", "hrms.history_compensationsnapshot"])
    conn.execute("UPDATE hrms.employees_employee SET first_name = upper(first_name), tenure_years = 99")
    result = backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root, pre_restore_backup=False)
    assert result.counts()["hrms.employees_employee"].updated == 3
    assert table_digest(conn, "hrms.employees_employee") == original
    assert digests(conn, ["hrms.history_timelineevent", "hrms.history_compensationsnapshot"]) == history


def test_undo_a_run_by_restoring_its_stage_backups_newest_first(populated, reader, restorer, backup_root):
    conn = populated
    original = digests(conn, ["hrms.ladders_ladder", "hrms.employees_employee", "hrms.imports_importrecord"])
    record = ("INSERT INTO hrms.imports_importrecord (stage, file_name, file_sha256, outcome) "
              "VALUES (%s, %s, repeat('a', 64), 'succeeded') RETURNING id")
    ladders = backups.take_backup(reader, ["ladders_ladder", "imports_importrecord"], label="import_ladders", run_id="run1", backup_root=backup_root)
    rec = conn.execute(record, ["ladders", "ladders.csv"]).fetchone()[0]
    conn.execute("INSERT INTO hrms.ladders_ladder (code, name, import_record_id) VALUES ('HR', 'People', %s)", [rec])
    users = backups.take_backup(reader, ["employees_employee", "imports_importrecord"], label="import_users", run_id="run1", backup_root=backup_root)
    rec = conn.execute(record, ["users", "users.csv"]).fetchone()[0]
    conn.execute("INSERT INTO hrms.employees_employee (email, ladder_id, import_record_id) "
                 "SELECT 'new.hire@nhia.gov.gh', id, %s FROM hrms.ladders_ladder WHERE code = 'HR'", [rec])

    with pytest.raises(BackupError, match="employees_employee"):
        backups.restore_backup(restorer, ladders.backup_id, backup_root=backup_root)
    backups.restore_backup(restorer, users.backup_id, backup_root=backup_root)
    backups.restore_backup(restorer, ladders.backup_id, backup_root=backup_root)
    assert digests(conn, ["hrms.ladders_ladder", "hrms.employees_employee", "hrms.imports_importrecord"]) == original
