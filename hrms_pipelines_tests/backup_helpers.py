"""What the backup tests share: a small company with every awkward value, its mutation, table
digests, connections as the duty roles, and ways to forge a backup the way only a key holder could."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import psycopg
import pyrage
import pytest

from hrms_pipelines.backups import crypto
from hrms_pipelines.resources import READER, RESTORER

# Parents before children; the org/ladder/people/history tables an import touches.
TABLES = [
    "hrms.org_organization", "hrms.org_department", "hrms.org_tribe", "hrms.org_team",
    "hrms.ladders_ladder", "hrms.ladders_level", "hrms.employees_employee",
    "hrms.history_timelineevent", "hrms.history_compensationsnapshot",
]

AWKWARD_TEXT = [
    'He said "hello", then left',
    "line one\nline two\r\nline three",
    "Kwame Nkrumah – Ɔsɛe Ama 😀",
    "=HYPERLINK(\"http://evil\")",
    "'; DROP TABLE hrms.employees_employee; --",
    "\\.",
    "back\\slash\ttab",
    "",
]


def table_digest(conn: psycopg.Connection, table: str) -> tuple[int, str]:
    """Row count and md5 of every row's text, in primary-key order: equal digests, equal tables."""
    return conn.execute(
        f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) FROM {table} t"
    ).fetchone()


def digests(conn: psycopg.Connection, tables=TABLES) -> dict[str, tuple[int, str]]:
    return {t: table_digest(conn, t) for t in tables}


def populate(conn: psycopg.Connection) -> None:
    """A small company with every awkward value: NULL and '', quotes, newlines, unicode, jsonb, numeric."""
    with conn.transaction():
        _populate(conn)


def _populate(conn: psycopg.Connection) -> None:
    conn.execute("""
        INSERT INTO hrms.org_organization (id, code, name) VALUES (1, 'NHIA', 'National Health Insurance Authority');
        INSERT INTO hrms.org_department (id, code, name, organization_id) VALUES (1, 'FIN', 'Finance', 1), (2, 'IT', 'IT & "Digital"', 1);
        INSERT INTO hrms.org_tribe (id, code, name, organization_id) VALUES (1, 'CORE', repeat('Core Platforms ', 4000), 1);
        INSERT INTO hrms.org_team (id, code, name, tribe_id, department_id) VALUES (1, 'PAY', 'Payments', 1, 2), (2, 'CLM', 'Claims', NULL, 1);
        INSERT INTO hrms.ladders_ladder (id, code, name, description) VALUES (1, 'ENG', 'Engineering', NULL), (2, 'OPS', 'Operations', '');
        INSERT INTO hrms.ladders_level (id, ladder_id, level_number, title, pay_band, salary_min, salary_max)
        VALUES (1, 1, 1, 'Engineer I', 'P1', 4500.00, 6000.50), (2, 1, 2, 'Engineer II', NULL, 6000.51, 9000.00),
               (3, 2, 1, 'Officer', '', NULL, NULL);
        INSERT INTO hrms.employees_employee (id, email, employee_number, first_name, last_name, job_title, status,
                                             hire_date, tenure_years, team_id, manager_id, ladder_id, level_number)
        VALUES (1, 'ama.mensah@nhia.gov.gh', 'E001', 'Ama', 'Mensah', 'Head of Engineering', 'active', '2015-03-02', 10.25, 1, NULL, 1, 2),
               (2, 'kofi.boateng@nhia.gov.gh', 'E002', 'Kofi', NULL, '', 'on_leave', '2019-11-30', 0.00, 1, 1, 1, 1),
               (3, 'yaw.asante@nhia.gov.gh', NULL, 'Yaw', 'Asante', NULL, NULL, NULL, NULL, 2, 1, NULL, NULL);
        UPDATE hrms.org_team SET leader_id = 1 WHERE id = 1;
    """)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO hrms.history_timelineevent (id, employee_id, event_type, event_date, summary, details, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
            [
                (i + 1, 1 + i % 3, ["hire", "promotion", "salary_change", "note"][i % 4], f"2020-01-{i + 1:02d}",
                 text or "(empty)",
                 json.dumps({"text": text, "n": 1.10, "nested": {"list": [1, None, "x"]}, "big": 12345678901234567890}),
                 f"2024-06-0{1 + i % 9} 12:34:56.123456+02")
                for i, text in enumerate(AWKWARD_TEXT)
            ],
        )
        cur.executemany(
            "INSERT INTO hrms.history_compensationsnapshot (id, event_id, employee_id, effective_date, salary, previous_salary, pay_band) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(1, 2, 2, "2020-01-02", "8500.00", None, "P2"), (2, 3, 3, "2020-01-03", "0.10", "0.00", "")],
        )
    # the ids above were given explicitly: move the identity sequences past them like a real load would
    for table in TABLES:
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")


def mutate(conn: psycopg.Connection) -> None:
    """What an import (or a mistake) does after a backup: updates, inserts, a deletion, NULL <-> ''."""
    with conn.transaction():
        _mutate(conn)


def _mutate(conn: psycopg.Connection) -> None:
    conn.execute("""
        UPDATE hrms.org_organization SET name = 'NHIA (renamed)';
        UPDATE hrms.ladders_ladder SET description = '' WHERE id = 1;
        UPDATE hrms.ladders_ladder SET description = NULL WHERE id = 2;
        UPDATE hrms.ladders_level SET salary_max = 9000.001 WHERE id = 2;
        INSERT INTO hrms.ladders_level (ladder_id, level_number, title) VALUES (1, 3, 'Senior Engineer');
        INSERT INTO hrms.org_team (code, name, tribe_id) VALUES ('NEW', 'New team', 1);
        INSERT INTO hrms.employees_employee (email, first_name, team_id, ladder_id, level_number)
        VALUES ('new.boss@nhia.gov.gh', 'New', (SELECT id FROM hrms.org_team WHERE code = 'NEW'), 1, 3);
        -- an existing employee now reports to, and sits in a team led by, rows that the backup lacks
        UPDATE hrms.employees_employee SET manager_id = (SELECT id FROM hrms.employees_employee WHERE email = 'new.boss@nhia.gov.gh'),
                                           team_id = (SELECT id FROM hrms.org_team WHERE code = 'NEW'), first_name = 'Kofi ''KB'''
        WHERE id = 2;
        UPDATE hrms.org_team SET leader_id = (SELECT id FROM hrms.employees_employee WHERE email = 'new.boss@nhia.gov.gh') WHERE code = 'NEW';
        UPDATE hrms.history_timelineevent SET details = details || '{"n": 1.1}'::jsonb, created_at = created_at + interval '1 microsecond' WHERE id = 1;
        DELETE FROM hrms.history_compensationsnapshot WHERE id = 2;
        DELETE FROM hrms.history_timelineevent WHERE id = 3;
        INSERT INTO hrms.history_timelineevent (employee_id, event_type, event_date, summary) VALUES (3, 'note', '2025-01-01', 'new');
    """)


@pytest.fixture
def backup_root(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def conn(database_url: str):
    """The superuser, for the tests' own changes and assertions (never for the code under test)."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def reader(hrms_db):
    """What the import's backup assets use: the reader role, outside any transaction."""
    with hrms_db.connection(READER, autocommit=True) as connection:
        yield connection


@pytest.fixture
def restorer(hrms_db):
    """What the restore job uses: the restorer role, outside any transaction."""
    with hrms_db.connection(RESTORER, autocommit=True) as connection:
        yield connection


@pytest.fixture
def populated(conn):
    populate(conn)
    return conn


def backup_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def decrypt(path: Path) -> bytes:
    """A backup file's CSV, the way `age -d -i identity.txt FILE | gunzip` reads it."""
    return gzip.decompress(pyrage.decrypt(path.read_bytes(), crypto.identities()))


def replace_file(directory: Path, data: dict, index: int, csv: bytes, **overrides) -> None:
    """Put `csv` (encrypted to the service's recipient) in the place of table `index`, and make its
    manifest entry tell the truth about it (unless `overrides` say otherwise)."""
    entry = data["tables"][index]
    encrypted = pyrage.encrypt(gzip.compress(csv), crypto.recipients())
    (directory / entry["file"]).write_bytes(encrypted)
    entry.update(bytes=len(encrypted), sha256=hashlib.sha256(encrypted).hexdigest(), csv_bytes=len(csv))
    entry.update(overrides)


def sign_again(directory: Path, data: dict) -> None:
    """Rewrite the manifest and sign it with the service's key (what only a key holder can do)."""
    body = json.dumps(data, indent=2).encode()
    (directory / "manifest.json").write_bytes(body)
    (directory / "manifest.sig").write_bytes(crypto.sign(body))


def audit_rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM hrms.core_auditlog").fetchone()[0]
