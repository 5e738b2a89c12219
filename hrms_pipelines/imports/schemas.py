"""Pandera models of the CSV files: every cell rule, checked lazily (every failure at once).

Cells are read as text (nothing is guessed, `=SUM(..)` stays text); the rules below say which text
is acceptable. Their names are the "rule" shown to the user in error messages and reject files, so
they are written as the expectation: "a date as YYYY-MM-DD". Rules that span files or need the
database (duplicates, unknown references, management cycles) are checked set-based in SQL by the
stage, and reported the same way.
"""

from __future__ import annotations

import re
from typing import Optional

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from hrms_pipelines.imports import formats

CODE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
DECIMAL_RE = r"^\d{1,10}(\.\d{1,2})?$"
INT_RE = r"^\d{1,4}$"

REQUIRED = "required (must not be blank)"
CODE = "a code of letters, digits, '_', '.' or '-' (no spaces)"
EMAIL = "an email address like ama.mensah@nhia.gov.gh"
DATE = "a date as YYYY-MM-DD (e.g. 2024-03-31)"
AMOUNT = "an amount like 8500.00 (no currency sign or thousands separator)"
LEVEL = "a whole number from 1 to 20"
POSITION = "a whole number from 0 to 999"
CURRENCY = "a 3-letter currency code like GHS"
TENURE = "a number of years like 4.5"


def _blank(s: pd.Series) -> pd.Series:
    return s.str.strip().eq("")


def required(s: pd.Series) -> pd.Series:
    return ~_blank(s)


def _optional_match(s: pd.Series, pattern: str) -> pd.Series:
    stripped = s.str.strip()
    return stripped.eq("") | stripped.str.match(pattern)


def code(s):
    return _optional_match(s, CODE_RE)


def email(s):
    return _optional_match(s, EMAIL_RE)


def date(s):
    stripped = s.str.strip()
    parsed = pd.to_datetime(stripped.where(stripped.str.match(DATE_RE), None), format="%Y-%m-%d", errors="coerce")
    return stripped.eq("") | parsed.notna()


def amount(s):
    return _optional_match(s, DECIMAL_RE)


def level(s):
    stripped = s.str.strip()
    number = pd.to_numeric(stripped.where(stripped.str.match(INT_RE), None), errors="coerce")
    return stripped.eq("") | number.between(1, 20)


def position(s):
    return _optional_match(s, r"^\d{1,3}$")


def currency(s):
    return _optional_match(s, r"^[A-Z]{3}$")


def tenure(s):
    return _optional_match(s, r"^\d{1,3}(\.\d{1,2})?$")


def one_of(values: tuple[str, ...]):
    allowed = set(values)

    def check(s):
        stripped = s.str.strip()
        return stripped.eq("") | stripped.str.lower().isin(allowed)

    return check


def _filled(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(False, index=df.index)
    return ~_blank(df[column])


class _File(pa.DataFrameModel):
    class Config:
        strict = False   # extra columns are ignored (the reader warns about them)
        coerce = False


class LaddersFile(_File):
    """ladders.csv: one row per ladder, aspect or level (the row type detected per row)."""

    row_type: Series[str]
    ladder_code: Series[str]
    ladder_name: Optional[Series[str]]
    aspect_code: Optional[Series[str]]
    aspect_name: Optional[Series[str]]
    position: Optional[Series[str]]
    level_number: Optional[Series[str]]
    level_title: Optional[Series[str]]
    pay_band: Optional[Series[str]]
    salary_min: Optional[Series[str]]
    salary_max: Optional[Series[str]]
    currency: Optional[Series[str]]
    description: Optional[Series[str]]

    @pa.check("ladder_code", name=REQUIRED)
    def _required(cls, s):
        return required(s)

    @pa.check("ladder_code", "aspect_code", name=CODE)
    def _code(cls, s):
        return code(s)

    @pa.check("row_type", name="one of: ladder, aspect, level")
    def _row_type(cls, s):
        return one_of(formats.LADDER_ROW_TYPES)(s)

    @pa.check("level_number", name=LEVEL)
    def _level(cls, s):
        return level(s)

    @pa.check("position", name=POSITION)
    def _position(cls, s):
        return position(s)

    @pa.check("salary_min", "salary_max", name=AMOUNT)
    def _amount(cls, s):
        return amount(s)

    @pa.check("currency", name=CURRENCY)
    def _currency(cls, s):
        return currency(s)

    @pa.dataframe_check(name="ladder_name: required on ladder rows")
    def _ladder_name(cls, df):
        return ~df["row_type"].eq("ladder") | _filled(df, "ladder_name")

    @pa.dataframe_check(name="aspect_name: required on aspect rows")
    def _aspect_name(cls, df):
        return ~df["row_type"].eq("aspect") | _filled(df, "aspect_name")

    @pa.dataframe_check(name="level_title: required on level rows")
    def _level_title(cls, df):
        return ~df["row_type"].eq("level") | _filled(df, "level_title")

    @pa.dataframe_check(name="salary_max: must not be below salary_min")
    def _salary_range(cls, df):
        if "salary_min" not in df.columns or "salary_max" not in df.columns:
            return pd.Series(True, index=df.index)
        low = pd.to_numeric(df["salary_min"].str.strip(), errors="coerce")
        high = pd.to_numeric(df["salary_max"].str.strip(), errors="coerce")
        return ~(low > high)


def _org_model(kind: formats.OrgKind) -> type[_File]:
    """organizations/departments/tribes/chapters/teams.csv share one shape of rules."""
    annotations = {}
    namespace: dict = {"__doc__": f"{kind.kind}.csv", "__module__": __name__}
    for column in kind.columns:
        annotations[column] = Series[str] if column in kind.required else Optional[Series[str]]
    namespace["__annotations__"] = annotations
    code_columns = [c for c in kind.columns if c.endswith("_code")]
    email_columns = [c for c in kind.columns if c.endswith("_email")]
    namespace["_required"] = pa.check(*kind.required, name=REQUIRED)(lambda cls, s: required(s))
    namespace["_code"] = pa.check(*code_columns, name=CODE)(lambda cls, s: code(s))
    if email_columns:
        namespace["_email"] = pa.check(*email_columns, name=EMAIL)(lambda cls, s: email(s))
    return type(f"{kind.prefix.title()}File", (_File,), namespace)


ORG_MODELS = {kind.kind: _org_model(kind) for kind in formats.ORG_KINDS}


class UsersFile(_File):
    """users.csv: one row per employee, keyed by email."""

    email: Series[str]
    first_name: Series[str]
    last_name: Series[str]
    employee_number: Optional[Series[str]]
    job_title: Optional[Series[str]]
    status: Optional[Series[str]]
    hire_date: Optional[Series[str]]
    termination_date: Optional[Series[str]]
    tenure_years: Optional[Series[str]]
    department_code: Optional[Series[str]]
    team_code: Optional[Series[str]]
    chapter_code: Optional[Series[str]]
    manager_email: Optional[Series[str]]
    ladder_code: Optional[Series[str]]
    level_number: Optional[Series[str]]

    @pa.check("email", "first_name", "last_name", name=REQUIRED)
    def _required(cls, s):
        return required(s)

    @pa.check("email", "manager_email", name=EMAIL)
    def _email(cls, s):
        return email(s)

    @pa.check("department_code", "team_code", "chapter_code", "ladder_code", name=CODE)
    def _code(cls, s):
        return code(s)

    @pa.check("status", name="one of: " + ", ".join(formats.USER_STATUSES))
    def _status(cls, s):
        return one_of(formats.USER_STATUSES)(s)

    @pa.check("hire_date", "termination_date", name=DATE)
    def _date(cls, s):
        return date(s)

    @pa.check("tenure_years", name=TENURE)
    def _tenure(cls, s):
        return tenure(s)

    @pa.check("level_number", name=LEVEL)
    def _level(cls, s):
        return level(s)

    @pa.dataframe_check(name="ladder_code: required when level_number is given")
    def _level_needs_ladder(cls, df):
        return ~_filled(df, "level_number") | _filled(df, "ladder_code")

    @pa.dataframe_check(name="termination_date: must not be before hire_date")
    def _termination_after_hire(cls, df):
        if "termination_date" not in df.columns or "hire_date" not in df.columns:
            return pd.Series(True, index=df.index)
        hired = pd.to_datetime(df["hire_date"].str.strip(), format="%Y-%m-%d", errors="coerce")
        left = pd.to_datetime(df["termination_date"].str.strip(), format="%Y-%m-%d", errors="coerce")
        return ~(left < hired)


class HistoryFile(_File):
    """history.csv: one timeline event per row, with its compensation and seniority details."""

    email: Series[str]
    event_type: Series[str]
    event_date: Series[str]
    summary: Optional[Series[str]]
    ladder_code: Optional[Series[str]]
    level_number: Optional[Series[str]]
    previous_level_number: Optional[Series[str]]
    title: Optional[Series[str]]
    pay_band: Optional[Series[str]]
    salary: Optional[Series[str]]
    previous_salary: Optional[Series[str]]
    currency: Optional[Series[str]]
    notes: Optional[Series[str]]

    @pa.check("email", "event_type", "event_date", name=REQUIRED)
    def _required(cls, s):
        return required(s)

    @pa.check("email", name=EMAIL)
    def _email(cls, s):
        return email(s)

    @pa.check("event_type", name="one of: " + ", ".join(formats.EVENT_TYPES))
    def _event_type(cls, s):
        return one_of(formats.EVENT_TYPES)(s)

    @pa.check("event_date", name=DATE)
    def _date(cls, s):
        return date(s)

    @pa.check("ladder_code", name=CODE)
    def _code(cls, s):
        return code(s)

    @pa.check("level_number", "previous_level_number", name=LEVEL)
    def _level(cls, s):
        return level(s)

    @pa.check("salary", "previous_salary", name=AMOUNT)
    def _amount(cls, s):
        return amount(s)

    @pa.check("currency", name=CURRENCY)
    def _currency(cls, s):
        return currency(s)

    @pa.dataframe_check(name="ladder_code: required when level_number is given")
    def _level_needs_ladder(cls, df):
        return ~_filled(df, "level_number") | _filled(df, "ladder_code")

    @pa.dataframe_check(name="salary: required when previous_salary is given")
    def _previous_needs_salary(cls, df):
        return ~_filled(df, "previous_salary") | _filled(df, "salary")


def rule_column(check_name: str) -> tuple[str | None, str]:
    """Split a dataframe-level rule "column: rule" into its column and rule."""
    match = re.match(r"^([a-z_]+): (.+)$", check_name)
    return (match.group(1), match.group(2)) if match else (None, check_name)


def column_schema(stage: str):
    """The stage's CSV columns and their rules as a Dagster TableSchema (shown on the asset's page)."""
    import dagster as dg

    files = {
        "ladders": {"ladders.csv": LaddersFile},
        "org": {f"{kind}.csv": model for kind, model in ORG_MODELS.items()},
        "users": {"users.csv": UsersFile},
        "history": {"history.csv": HistoryFile},
    }[stage]
    columns: dict[str, dg.TableColumn] = {}
    for file_name, model in files.items():
        for name, column in model.to_schema().columns.items():
            rules = [check.name for check in column.checks if check.name]
            where = f"{file_name}: " if len(files) > 1 else ""
            description = where + ("required; " if column.required else "optional; ") + ("; ".join(rules) or "free text")
            if name in columns:  # a column several org files share: name every file
                description = f"{columns[name].description} | {description}"
            columns[name] = dg.TableColumn(name=name, type="text", description=description,
                                           constraints=dg.TableColumnConstraints(nullable=not column.required))
    return dg.TableSchema(columns=list(columns.values()))
