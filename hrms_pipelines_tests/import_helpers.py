"""Small hand-written CSV files and helpers shared by the import tests."""

import csv
import io
import os
from contextlib import contextmanager
from pathlib import Path

import psycopg

from hrms_pipelines import settings
from hrms_pipelines.imports import history, ladders, org, stage, users
from hrms_pipelines.imports.options import ImportOptions

DATA_TABLES = [
    "ladders_ladder", "ladders_aspect", "ladders_level", "org_organization", "org_department", "org_tribe",
    "org_chapter", "org_team", "employees_employee", "history_timelineevent", "history_compensationsnapshot",
    "history_senioritysnapshot", "core_auditlog",
]

BASE = {
    "ladders.csv": [
        ["row_type", "ladder_code", "ladder_name", "aspect_code", "aspect_name", "level_number", "level_title", "pay_band", "salary_min", "salary_max"],
        ["", "ENG", "Engineering", "", "", "", "", "", "", ""],
        ["", "ENG", "", "DELIVERY", "Delivery", "", "", "", "", ""],
        ["", "ENG", "", "", "", "1", "Associate Engineer", "P1", "3000.00", "4500.00"],
        ["", "ENG", "", "", "", "2", "Engineer", "P2", "4500.00", "6500.00"],
        ["", "ENG", "", "", "", "3", "Senior Engineer", "P3", "6500.00", "9000.00"],
    ],
    "organizations.csv": [["organization_code", "organization_name"], ["NHIA", "National Health Insurance Authority"]],
    "departments.csv": [["department_code", "department_name", "organization_code"], ["ICT", "ICT", "NHIA"]],
    "tribes.csv": [["tribe_code", "tribe_name", "organization_code", "lead_email"], ["DIGITAL", "Digital Services", "NHIA", ""]],
    "chapters.csv": [["chapter_code", "chapter_name", "organization_code", "leader_email"], ["BACKEND", "Backend", "NHIA", ""]],
    "teams.csv": [["team_code", "team_name", "tribe_code", "department_code", "leader_email"], ["MOBILE", "Mobile", "DIGITAL", "ICT", ""]],
    "users.csv": [
        ["email", "first_name", "last_name", "status", "hire_date", "team_code", "chapter_code", "manager_email", "ladder_code", "level_number"],
        ["ama.mensah@nhia.gov.gh", "Ama", "Mensah", "active", "2015-02-01", "MOBILE", "BACKEND", "", "ENG", "3"],
        ["kofi.owusu@nhia.gov.gh", "Kofi", "Owusu", "active", "2019-06-10", "MOBILE", "BACKEND", "ama.mensah@nhia.gov.gh", "ENG", "2"],
        ["yaa.asante@nhia.gov.gh", "Yaa", "Asante", "active", "2021-09-01", "MOBILE", "", "kofi.owusu@nhia.gov.gh", "ENG", "1"],
    ],
    "history.csv": [
        ["email", "event_type", "event_date", "ladder_code", "level_number", "previous_level_number", "pay_band", "salary", "previous_salary"],
        ["kofi.owusu@nhia.gov.gh", "hire", "2019-06-10", "ENG", "1", "", "P1", "3500.00", ""],
        ["kofi.owusu@nhia.gov.gh", "promotion", "2021-01-01", "ENG", "2", "1", "P2", "4800.00", "3500.00"],
        ["yaa.asante@nhia.gov.gh", "hire", "2021-09-01", "ENG", "1", "", "P1", "3200.00", ""],
    ],
}
STAGES = {"ladders": ladders.STAGE, "org": org.STAGE, "users": users.STAGE, "history": history.STAGE}


def write(directory: Path, name: str, rows, *, newline: str = "\n", bom: bool = False) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    path = directory / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8"))
    return path


def write_base(directory: Path, **overrides) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in BASE.items():
        write(directory, name, overrides.get(name.removesuffix(".csv"), rows))
    return directory


class ListLog:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(("info", message))

    def warning(self, message):
        self.lines.append(("warning", message))

    def error(self, message):
        self.lines.append(("error", message))


@contextmanager
def import_folder(directory: Path):
    """`directory` as the deployment's import folder (HRMS_IMPORT_DIR) for the block."""
    previous = os.environ.get(settings.IMPORT_DIR_ENV)
    os.environ[settings.IMPORT_DIR_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(settings.IMPORT_DIR_ENV, None)
        else:
            os.environ[settings.IMPORT_DIR_ENV] = previous


def run_stage(hrms_db, name: str, directory: Path, run_id: str = "test-run", **options):
    log = ListLog()
    opts = ImportOptions(**options)
    with import_folder(directory):
        result = stage.run(hrms_db, STAGES[name], opts, run_id=run_id, log=stage.StageLog(log, opts.log_file, stage=name))
    result.log_lines = log.lines
    return result


def run_all(hrms_db, directory: Path, stages=("ladders", "org", "users", "history"), **options):
    return [run_stage(hrms_db, name, directory, **options) for name in stages]


def checksums(url: str, tables=DATA_TABLES) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM hrms.{t} x").fetchone()[0]
                for t in tables}


def scalar(url: str, query: str, params=None):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]
