"""The seed fixtures: which file fills which table, by which natural key, in which environments.

One CSV file per fixture under `seeds/fixtures/` (the seed's "What Gets Loaded" table). Reading a
file checks its header and row count against the registry here; everything about the values
(types, CHECK constraints) is checked by PostgreSQL when the rows are staged and inserted, and
reported with the file, row, column and value.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hrms_pipelines import settings

DEVELOPMENT = "development"
STAGING = "staging"
PRODUCTION = "production"
ENVIRONMENTS = (DEVELOPMENT, STAGING, PRODUCTION)
ALL_ENVIRONMENTS = frozenset(ENVIRONMENTS)

# The staging admin user's password; no default exists anywhere.
STAGING_ADMIN_PASSWORD_ENV = "HRMS_STAGING_ADMIN_PASSWORD"
MIN_ADMIN_PASSWORD_LENGTH = 12
FIXTURES_DIR_ENV = "HRMS_FIXTURES_DIR"


class FixtureError(Exception):
    """A fixture cannot be loaded; the message says which file, row, column and rule."""


@dataclass(frozen=True)
class Lookup:
    """A file column that names a row of another table by its code; the table stores its id."""

    file_column: str
    target_column: str
    table: str
    key: str = "code"


@dataclass(frozen=True)
class Fixture:
    key: str
    """Partition key and file stem (seeds/fixtures/<key>.csv)."""
    title: str
    table: str
    """Table in the hrms schema."""
    natural_key: tuple[str, ...]
    """Columns of the unique constraint that identifies a row; ON CONFLICT target."""
    columns: tuple[str, ...]
    """Header of the file, in order."""
    environments: frozenset[str] = ALL_ENVIRONMENTS
    expected_rows: int | None = None
    """The seed's count; None where the seed gives none (bank sort codes, payroll roles)."""
    requires: tuple[str, ...] = ()
    """Fixtures whose rows this one references; loaded first, in the same transaction."""
    extra_columns: tuple[str, ...] = field(default=())
    """File columns that are not columns of the table (a lookup's code, the roles' permission list)."""
    lookups: tuple[Lookup, ...] = ()
    """File columns holding another table's code, stored as that row's id."""
    computed: tuple[str, ...] = ()
    """Table columns the loader computes (the admin user's password hash), never in the file."""

    @property
    def filename(self) -> str:
        return f"{self.key}.csv"

    @property
    def table_columns(self) -> tuple[str, ...]:
        """The columns of the table this fixture fills, file columns first."""
        own = tuple(c for c in self.columns if c not in self.extra_columns)
        return own + tuple(lookup.target_column for lookup in self.lookups) + self.computed

    def allowed_in(self, environment: str) -> bool:
        return environment in self.environments

    def describe_environments(self) -> str:
        return ", ".join(e for e in ENVIRONMENTS if e in self.environments)


FIXTURES: tuple[Fixture, ...] = (
    Fixture("permissions", "Permissions", "core_permission", ("code",), ("code", "name", "description"),
            expected_rows=20),
    Fixture("roles", "Roles", "core_role", ("code",), ("code", "name", "description", "permissions"),
            expected_rows=11, requires=("permissions",), extra_columns=("permissions",)),
    Fixture("job_grades", "Job grades", "employees_jobgrade", ("code",),
            ("code", "name", "rank", "min_salary", "max_salary", "description"), expected_rows=10),
    Fixture("job_categories", "Job categories", "employees_jobcategory", ("code",), ("code", "name", "description"),
            expected_rows=8),
    Fixture("leave_types", "Leave types", "leave_leavetype", ("code",),
            ("code", "name", "days_per_year", "is_paid", "requires_approval", "max_carry_forward", "description"),
            expected_rows=9),
    Fixture("tax_brackets", "Tax brackets (monthly PAYE bands)", "payroll_taxbracket", ("effective_from", "position"),
            ("effective_from", "position", "band_width", "rate", "description"), expected_rows=7),
    Fixture("tax_reliefs", "Tax reliefs", "payroll_taxrelief", ("code",),
            ("code", "name", "annual_amount", "rate", "description"), expected_rows=5),
    Fixture("ssnit_rates", "SSNIT rates", "payroll_ssnitrate", ("code",),
            ("code", "name", "employee_rate", "employer_rate", "effective_from", "description"), expected_rows=3),
    Fixture("pay_components", "Pay components", "payroll_paycomponent", ("code",),
            ("code", "name", "kind", "is_taxable", "is_statutory", "description"), expected_rows=14),
    Fixture("misconduct_categories", "Misconduct categories", "discipline_misconductcategory", ("code",),
            ("code", "name", "severity", "description"), expected_rows=12),
    Fixture("grievance_categories", "Grievance categories", "discipline_grievancecategory", ("code",),
            ("code", "name", "description"), expected_rows=10),
    Fixture("bank_sort_codes", "Bank sort codes", "payroll_banksortcode", ("sort_code",),
            ("sort_code", "bank_name", "branch_name", "city")),
    Fixture("staging_admin_user", "Test admin user", "core_useraccount", ("username",),
            ("username", "email", "role", "is_superuser"), environments=frozenset({STAGING}), expected_rows=1,
            requires=("roles",), extra_columns=("role",),
            lookups=(Lookup("role", "role_id", "core_role"),), computed=("password_hash",)),
    Fixture("payroll_roles", "Payroll roles", "payroll_payrollrole", ("code",), ("code", "name", "description"),
            environments=frozenset({PRODUCTION})),
)

BY_KEY: dict[str, Fixture] = {f.key: f for f in FIXTURES}

# Written by the migrator, never the importer (core/0005 takes these tables out of its reach).
ACCESS_CONTROL_TABLES = frozenset({"core_permission", "core_role", "core_rolepermission", "core_useraccount"})


def fixtures_dir() -> Path:
    return Path(os.environ.get(FIXTURES_DIR_ENV) or settings.PROJECT_ROOT / "seeds" / "fixtures").resolve()


def check_environment(environment: str) -> str:
    """The environment name, normalised; anything but the three known names is refused."""
    normalised = environment.strip().lower()
    if normalised not in ENVIRONMENTS:
        raise FixtureError(
            f"{settings.ENVIRONMENT_ENV}={environment!r} is not an environment the seed knows; "
            f"set it to one of {', '.join(ENVIRONMENTS)}"
        )
    return normalised


def for_environment(environment: str) -> list[Fixture]:
    """The fixtures the seed's table loads in this environment, in registry order."""
    environment = check_environment(environment)
    return [f for f in FIXTURES if f.allowed_in(environment)]


def get(key: str) -> Fixture:
    try:
        return BY_KEY[key]
    except KeyError:
        raise FixtureError(f"unknown fixture {key!r}; known fixtures: {', '.join(BY_KEY)}") from None


def ensure_allowed(fixture: Fixture, environment: str) -> None:
    """The hard refusal: a fixture outside its environments is never loaded, whoever asks."""
    environment = check_environment(environment)
    if not fixture.allowed_in(environment):
        raise FixtureError(
            f"fixture {fixture.key!r} ({fixture.title}) is loaded only in {fixture.describe_environments()}; "
            f"this deployment is {settings.ENVIRONMENT_ENV}={environment!r}, so it is refused"
        )


def with_requirements(fixtures: Iterable[Fixture]) -> list[Fixture]:
    """The fixtures and everything they require, each once, requirements first."""
    ordered: list[Fixture] = []

    def visit(fixture: Fixture, path: tuple[str, ...]) -> None:
        if fixture.key in path:
            raise FixtureError(f"fixture requirements form a cycle: {' -> '.join(path + (fixture.key,))}")
        for required in fixture.requires:
            visit(get(required), path + (fixture.key,))
        if fixture not in ordered:
            ordered.append(fixture)

    for fixture in fixtures:
        visit(fixture, ())
    return ordered


@dataclass
class FixtureRows:
    fixture: Fixture
    path: Path
    rows: list[list[str | None]]
    """Values in the order of `fixture.columns`; empty cells are None (SQL NULL)."""


def read(fixture: Fixture, directory: Path | None = None) -> FixtureRows:
    """Read and shape-check a fixture file: header, field count of every row, row count."""
    path = (directory or fixtures_dir()) / fixture.filename
    if not path.is_file():
        raise FixtureError(f"{path}: fixture file of {fixture.key!r} is missing")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise FixtureError(f"{path}: the file is empty; expected the header {','.join(fixture.columns)}")
        header = [h.strip() for h in header]
        if tuple(header) != fixture.columns:
            raise FixtureError(
                f"{path}: header is {','.join(header)}; expected {','.join(fixture.columns)} (in this order)"
            )
        rows: list[list[str | None]] = []
        for line_values in reader:
            if not line_values or all(not v.strip() for v in line_values):
                continue
            if len(line_values) != len(header):
                raise FixtureError(
                    f"{path}: line {reader.line_num} has {len(line_values)} fields, the header has {len(header)} "
                    "(quote values that contain commas)"
                )
            rows.append([v.strip() or None for v in line_values])
    if fixture.expected_rows is not None and len(rows) != fixture.expected_rows:
        raise FixtureError(
            f"{path}: {len(rows)} row(s); the seed's table has {fixture.expected_rows} for {fixture.title}"
        )
    if not rows:
        raise FixtureError(f"{path}: no rows")
    return FixtureRows(fixture, path, rows)


_COPY_CONTEXT = re.compile(r"COPY \S+, line (\d+)(?:, column (\w+))?(?:: \"(.*)\")?", re.S)


def describe_copy_error(rows: FixtureRows, message: str, context: str | None) -> str:
    """A PostgreSQL COPY error, in the words of the fixture file (file line, column, value)."""
    match = _COPY_CONTEXT.search(context or "")
    if not match:
        return f"{rows.path}: {message}"
    data_line = int(match.group(1))
    column = match.group(2)
    where = f"row {data_line} (file line {data_line + 1})"
    if column:
        index = rows.fixture.columns.index(column) if column in rows.fixture.columns else None
        value = rows.rows[data_line - 1][index] if index is not None and data_line <= len(rows.rows) else match.group(3)
        where += f", column {column}, value {value!r}"
    return f"{rows.path}: {where}: {message}"
