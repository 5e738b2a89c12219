"""A restore trusts only what the service wrote (issue 10) and backups are encrypted at rest
(issue 11): signatures, the restorable tables, private folders, keys, encryption, streaming limits.
Every refusal changes nothing: table digests, audit rows and backup folders are compared."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from hrms_pipelines import backups, settings
from hrms_pipelines.backups import BackupError, crypto, tables
from hrms_pipelines_tests.backup_helpers import (  # noqa: F401  (fixtures)
    TABLES, audit_rows, backup_dirs, backup_root, conn, decrypt, digests, mutate, populated, reader, replace_file,
    restorer, sign_again,
)


def state(conn, root: Path) -> tuple:
    """Everything a refused restore must leave as it was."""
    return digests(conn), audit_rows(conn), backup_dirs(root)


@pytest.fixture
def taken(populated, reader, backup_root):
    """A backup of every test table, then the tables changed (so a restore would change them)."""
    manifest = backups.take_backup(reader, TABLES, label="import_users", run_id="r1", backup_root=backup_root)
    mutate(populated)
    return manifest


def manifest_data(manifest) -> dict:
    return json.loads((manifest.directory / "manifest.json").read_bytes())


def refused(restorer, conn, manifest, root: Path, pattern: str) -> str:
    before = state(conn, root)
    with pytest.raises(BackupError, match=pattern) as error:
        backups.restore_backup(restorer, manifest.backup_id, backup_root=root)
    assert state(conn, root) == before, "a refused restore changed something"
    return str(error.value)


# --------------------------------------------------------------------------------------------------
# Signatures


def test_a_forged_backup_with_true_checksums_but_no_or_a_wrong_signature_is_refused(taken, restorer, populated, backup_root):
    conn, directory = populated, taken.directory
    data = manifest_data(taken)
    # the forger's own rows (an application superuser's team lead, say), encrypted to the public recipient
    # (anyone may have it) and the manifest's sha256 and sizes made true
    forged = decrypt(directory / data["tables"][0]["file"]).replace(b"National Health Insurance Authority", b"Forged")
    replace_file(directory, data, 0, forged)
    body = json.dumps(data, indent=2).encode()
    (directory / "manifest.json").write_bytes(body)
    backups.verify_backup(backups.manifest.manifest_from_json(data, directory))  # every checksum is right

    # the old signature no longer matches
    message = refused(restorer, conn, taken, backup_root, r"signature .* does not match its manifest")
    assert "manifest.json was changed after the backup was written" in message
    # no signature at all
    (directory / "manifest.sig").unlink()
    refused(restorer, conn, taken, backup_root, rf"backup {taken.backup_id} is unsigned: .* no manifest\.sig")
    # a signature the forger made with a key of their own
    other = directory.parent / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    (directory / "manifest.sig").write_bytes(json.dumps({
        "algorithm": "HMAC-SHA256", "key_id": crypto.key_id(bytes.fromhex(other.read_text())),
        "signature": crypto._mac(bytes.fromhex(other.read_text()), body)}).encode())
    message = refused(restorer, conn, taken, backup_root, rf"backup {taken.backup_id} is signed by another key")
    assert other.read_text() not in message
    # a signature under the service's key id with garbage, and an unknown algorithm
    sig = json.loads((directory / "manifest.sig").read_text())
    for change in ({"key_id": crypto.key_id(crypto._signing_keys()[0][0])}, {"algorithm": "none"}):
        (directory / "manifest.sig").write_text(json.dumps({**sig, **change}))
        refused(restorer, conn, taken, backup_root, r"does not match|not HMAC-SHA256")
    # the unsigned/forged backup is not listed either
    assert taken.backup_id not in [m.backup_id for m in backups.list_backups(backup_root)]


def test_a_backup_signed_with_an_older_key_still_listed_in_the_key_file_restores(taken, restorer, populated, backup_root,
                                                                                    deployment_dirs, monkeypatch):
    """Key rotation: the new key signs; the old one, on a later line, still verifies."""
    old = (deployment_dirs["keys"] / crypto.DEFAULT_SIGNING_KEY).read_text()
    rotated = deployment_dirs["keys"] / "rotated.key"
    rotated.write_text(f"{os.urandom(32).hex()}\n{old}")
    rotated.chmod(0o600)
    monkeypatch.setenv(crypto.SIGNING_KEY_FILE_ENV, str(rotated))
    monkeypatch.setenv(crypto.IDENTITY_FILE_ENV, str(deployment_dirs["keys"] / crypto.DEFAULT_IDENTITY))
    backups.restore_backup(restorer, taken.backup_id, backup_root=backup_root, pre_restore_backup=False)
    # only the current key is accepted once the old line goes
    rotated.write_text(rotated.read_text().splitlines()[0] + "\n")
    refused(restorer, populated, taken, backup_root, "is signed by another key")


# --------------------------------------------------------------------------------------------------
# Only the tables an import stage backs up


@pytest.mark.parametrize("table, why", [
    ("hrms.core_auditlog", "the audit log is append-only"),
    ("hrms.core_useraccount", "application accounts"),
    ("hrms.core_rolepermission", "role permissions are access control"),
    ("hrms.core_backfillcheckpoint", "backfill checkpoints"),
    ("hrms.core_alert", "failure alerts"),
    ("hrms.payroll_payslip", "no import stage backs it up"),
])
def test_a_signed_backup_naming_an_unrestorable_table_is_refused_by_name(taken, restorer, populated, backup_root, table, why):
    data = manifest_data(taken)
    entry = data["tables"][-1]
    (taken.directory / entry["file"]).rename(taken.directory / f"{table}.csv.gz.age")
    entry.update(table=table, file=f"{table}.csv.gz.age")
    sign_again(taken.directory, data)  # even with the service's own signature
    message = refused(restorer, populated, taken, backup_root, rf"{re.escape(table)} is not restorable \({why}")
    assert "hrms.employees_employee" in message  # says which tables are
    with pytest.raises(BackupError, match=rf"{re.escape(table)} is not restorable"):
        backups.load_manifest(taken.backup_id, backup_root)


def test_backups_of_unrestorable_tables_are_not_taken(populated, reader, backup_root):
    for table in ("core_auditlog", "hrms.core_useraccount", "core_role", "core_permission"):
        with pytest.raises(BackupError, match="is not restorable"):
            backups.take_backup(reader, ["org_team", table], label="x", run_id=None, backup_root=backup_root)
    assert backup_dirs(backup_root) == []


def test_the_restorer_may_rewrite_exactly_the_restorable_tables(conn):
    granted = {f"hrms.{t}" for (t,) in conn.execute(
        "SELECT table_name FROM information_schema.role_table_grants "
        "WHERE grantee = 'hrms_restorer' AND privilege_type = 'DELETE' AND table_schema = 'hrms'")}
    assert granted == set(tables.restorable_tables())


# --------------------------------------------------------------------------------------------------
# Folders and files the service owns, private


def test_a_world_or_group_writable_folder_or_file_is_refused(taken, restorer, populated, backup_root):
    directory = taken.directory
    directory.chmod(0o777)
    message = refused(restorer, populated, taken, backup_root, r"folder .* is writable by its group and everyone \(mode 0777\)")
    assert "chmod go-w" in message
    assert taken.backup_id not in [m.backup_id for m in backups.list_backups(backup_root)]
    directory.chmod(0o700)
    backup_root.chmod(0o757)
    refused(restorer, populated, taken, backup_root, r"the backup root .* is writable by everyone \(mode 0757\)")
    backup_root.chmod(0o700)
    (directory / "hrms.org_team.csv.gz.age").chmod(0o620)
    refused(restorer, populated, taken, backup_root, r"hrms\.org_team\.csv\.gz\.age is writable by its group")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a folder's owner needs root")
def test_a_folder_owned_by_another_user_is_refused(taken, restorer, populated, backup_root):
    os.chown(taken.directory, 65534, 65534)
    refused(restorer, populated, taken, backup_root, r"is owned by uid 65534, not by the service's user")


def test_restore_reads_only_the_configured_root(taken, restorer, populated, backup_root, tmp_path, monkeypatch):
    """A signed backup copied elsewhere is not found: the job's root is HRMS_BACKUP_DIR, nothing else."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(backup_root, elsewhere)
    monkeypatch.setenv(settings.BACKUP_DIR_ENV, str(tmp_path / "configured"))
    with pytest.raises(BackupError, match="unknown backup id"):
        backups.restore_backup(restorer, taken.backup_id)


# --------------------------------------------------------------------------------------------------
# Encryption


def test_backup_files_are_unreadable_without_the_key_and_exact_with_it(populated, reader, restorer, backup_root):
    conn = populated
    original = digests(conn)
    manifest = backups.take_backup(reader, TABLES, label="t", run_id="r1", backup_root=backup_root)
    planted = [b"ama.mensah@nhia.gov.gh", b"kofi.boateng@nhia.gov.gh", b"8500.00", b"4500.00", b"Mensah"]
    for path in manifest.directory.iterdir():
        data = path.read_bytes()
        assert not any(value in data for value in planted), f"{path.name} holds plaintext"
        if path.suffix == ".age":
            assert data.startswith(b"age-encryption.org/v1\n")
            with pytest.raises(OSError):
                gzip.decompress(data)
            with pytest.raises(pyrage.DecryptError):
                pyrage.decrypt(data, [x25519.Identity.generate()])
    csv = decrypt(manifest.directory / "hrms.employees_employee.csv.gz.age")
    assert b"ama.mensah@nhia.gov.gh" in csv
    mutate(conn)
    backups.restore_backup(restorer, manifest.backup_id, backup_root=backup_root)
    assert digests(conn) == original


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command-line tool is not installed")
def test_the_age_command_decrypts_a_backup_file_by_hand(populated, reader, backup_root):
    manifest = backups.take_backup(reader, ["org_department"], label="t", run_id="r1", backup_root=backup_root)
    identity = settings.keys_dir() / crypto.DEFAULT_IDENTITY
    done = subprocess.run(f"age -d -i {identity} {manifest.directory / 'hrms.org_department.csv.gz.age'} | gunzip",
                          shell=True, capture_output=True, check=True)
    assert done.stdout.startswith(b"id,code,name,") and b'IT & ""Digital""' in done.stdout


def test_a_wrong_or_missing_key_is_refused_before_anything_is_staged(taken, restorer, populated, backup_root,
                                                                     deployment_dirs, monkeypatch):
    keys = deployment_dirs["keys"]
    wrong = keys / "wrong-identity.txt"
    wrong.write_text(f"{x25519.Identity.generate()}\n")
    wrong.chmod(0o600)
    monkeypatch.setenv(crypto.SIGNING_KEY_FILE_ENV, str(keys / crypto.DEFAULT_SIGNING_KEY))
    monkeypatch.setenv(crypto.IDENTITY_FILE_ENV, str(wrong))
    message = refused(restorer, populated, taken, backup_root,
                      r"cannot be decrypted with the configured identity .*No matching keys found")
    assert "Nothing was changed" in message and "AGE-SECRET-KEY" not in message
    # a writer-only deployment: the public recipient and the signing key, no identity
    monkeypatch.delenv(crypto.IDENTITY_FILE_ENV)
    monkeypatch.setenv(crypto.RECIPIENT_ENV, (keys / crypto.DEFAULT_RECIPIENTS).read_text().split()[-1])
    refused(restorer, populated, taken, backup_root, r"no backup identity configured: .*HRMS_BACKUP_IDENTITY_FILE")
    # a key file others can read is refused, naming the fix
    monkeypatch.setenv(crypto.IDENTITY_FILE_ENV, str(keys / crypto.DEFAULT_IDENTITY))
    (keys / crypto.DEFAULT_IDENTITY).chmod(0o644)
    refused(restorer, populated, taken, backup_root, r"is open to others \(mode 0644\).*chmod 600")


def test_a_writer_needs_only_the_public_recipient(populated, reader, backup_root, deployment_dirs, monkeypatch):
    keys = deployment_dirs["keys"]
    backups.take_backup(reader, ["org_team"], label="t", run_id=None, backup_root=backup_root)  # makes the default keys
    recipient = (keys / crypto.DEFAULT_RECIPIENTS).read_text().split()[-1]
    monkeypatch.setenv(crypto.RECIPIENT_ENV, recipient)
    monkeypatch.setenv(crypto.SIGNING_KEY_FILE_ENV, str(keys / crypto.DEFAULT_SIGNING_KEY))
    (keys / crypto.DEFAULT_IDENTITY).unlink()
    manifest = backups.take_backup(reader, ["org_team"], label="t", run_id=None, backup_root=backup_root)
    assert manifest.recipients == (recipient,)
    assert not (keys / crypto.DEFAULT_IDENTITY).exists()  # configured deployments get no generated keys
    monkeypatch.setenv(crypto.RECIPIENT_ENV, "age1notakey")
    with pytest.raises(BackupError, match=f"{crypto.RECIPIENT_ENV}: .* is not an age X25519 recipient"):
        backups.take_backup(reader, ["org_team"], label="t", run_id=None, backup_root=backup_root)
    monkeypatch.delenv(crypto.RECIPIENT_ENV)
    monkeypatch.delenv(crypto.SIGNING_KEY_FILE_ENV)
    monkeypatch.setenv(crypto.RECIPIENTS_FILE_ENV, str(keys / crypto.DEFAULT_RECIPIENTS))
    with pytest.raises(BackupError, match=f"no backup signing key configured: set {crypto.SIGNING_KEY_FILE_ENV}"):
        backups.take_backup(reader, ["org_team"], label="t", run_id=None, backup_root=backup_root)
    assert len(backup_dirs(backup_root)) == 2


def test_the_embedded_default_generates_private_keys_once(deployment_dirs):
    keys = deployment_dirs["keys"]
    first = crypto.recipients()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in (crypto.DEFAULT_IDENTITY, crypto.DEFAULT_RECIPIENTS, crypto.DEFAULT_SIGNING_KEY):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert [str(r) for r in crypto.recipients()] == [str(r) for r in first]
    assert [str(i.to_public()) for i in crypto.identities()] == [str(r) for r in first]
    assert not keys.is_relative_to(settings.backup_dir())


# --------------------------------------------------------------------------------------------------
# Streaming limits


def test_a_decompression_bomb_is_refused_as_soon_as_it_passes_the_manifest(populated, reader, restorer, backup_root):
    """0.7 MB of gzip that would stage 2,000,000 rows, behind a manifest that says 1 row (signed with
    the service's key, as a compromised writer could): refused at row 2, after a few kilobytes."""
    conn = populated
    manifest = backups.take_backup(reader, ["org_organization"], label="t", run_id="r1", backup_root=backup_root)
    data = manifest_data(manifest)
    header = decrypt(manifest.directory / data["tables"][0]["file"]).split(b"\n", 1)[0]
    bomb = header + b"\n" + b"100,C100,Bomb,,,2024-01-01 00:00:00+00,2024-01-01 00:00:00+00\n" * 2_000_000
    encrypted = pyrage.encrypt(gzip.compress(bomb, 9), crypto.recipients())
    assert len(encrypted) < 700_000
    (manifest.directory / data["tables"][0]["file"]).write_bytes(encrypted)
    for csv_bytes in (10**12, len(header) + 200):  # the rows overflow first; then the CSV bytes do
        data["tables"][0].update(bytes=len(encrypted), sha256=hashlib.sha256(encrypted).hexdigest(), rows=1,
                                 csv_bytes=csv_bytes)
        sign_again(manifest.directory, data)
        what, limit = ("rows", "1") if csv_bytes > len(bomb) else ("CSV bytes", f"{csv_bytes:,}")
        message = refused(restorer, conn, manifest, backup_root,
                          rf"holds more {what} than the {limit} its manifest lists; refused as soon as it passed")
        read = int(re.search(r"after reading ([\d,]+) of ([\d,]+) encrypted bytes", message)[1].replace(",", ""))
        assert read <= 128 << 10, message  # the first chunks of the file, not the rest


def test_a_file_longer_than_its_manifest_says_is_refused_while_streaming(populated, reader, restorer, backup_root):
    manifest = backups.take_backup(reader, ["org_organization"], label="t", run_id="r1", backup_root=backup_root)
    data = manifest_data(manifest)
    csv = decrypt(manifest.directory / data["tables"][0]["file"])
    replace_file(manifest.directory, data, 0, csv, csv_bytes=len(csv) - 1)
    sign_again(manifest.directory, data)
    refused(restorer, populated, manifest, backup_root, r"holds more CSV bytes than the [\d,]+ its manifest lists")
