"""Personal and pay data: which columns hold it (declared once, here) and how a value of one is shown.

Values of these columns stay in the HR tables. Whatever leaves them for Dagster's event log, run or
asset metadata, compute logs, the optional log file or an alert shows a masked form that keeps the
value's shape, so an analyst still sees what is wrong with it:

    '4,800.00'             -> '#,###.##'          (money, identifiers: digits -> #, letters -> x/X)
    'kofi.owusu@nhia.gov.gh' -> 'k***@nhia.gov.gh'  (emails: the first letter and the domain)
    'Kofi'                 -> 'K***'              (names)
    'Promoted to L4 ...'   -> '<text, 48 characters>'   (free text that may quote pay)

The same column names are used by the import files and the database (users.csv `email` is
hrms.employees_employee.email), so one declaration serves both. Reject files, the analyst's own
worklist, keep full values (0600, in a private folder): that is the one place they are meant to be read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum


class Kind(Enum):
    EMAIL = "email"
    NAME = "name"
    IDENTIFIER = "identifier"      # employee numbers, bank accounts, national ids
    MONEY = "money"                # salaries, pay amounts, deductions
    DATE = "date"                  # dates of birth and the like
    TEXT = "text"                  # free text that may quote any of the above (summaries, notes, audit copies)
    SECRET = "secret"              # password hashes: never shown in any form


# Column name -> kind, for the import files and the HR tables alike. A column listed here is
# sensitive wherever it appears; TABLE_COLUMNS below adds ones whose name alone does not say so.
COLUMNS: dict[str, Kind] = {
    # people
    "email": Kind.EMAIL, "manager_email": Kind.EMAIL, "lead_email": Kind.EMAIL, "leader_email": Kind.EMAIL,
    "first_name": Kind.NAME, "last_name": Kind.NAME,
    "employee_number": Kind.IDENTIFIER, "national_id": Kind.IDENTIFIER, "ghana_card": Kind.IDENTIFIER,
    "ssnit_number": Kind.IDENTIFIER, "tin": Kind.IDENTIFIER, "bank_account": Kind.IDENTIFIER,
    "account_number": Kind.IDENTIFIER, "phone": Kind.IDENTIFIER,
    "date_of_birth": Kind.DATE, "birth_date": Kind.DATE,
    # pay
    "salary": Kind.MONEY, "previous_salary": Kind.MONEY, "basic_salary": Kind.MONEY, "allowances": Kind.MONEY,
    "gross_pay": Kind.MONEY, "net_pay": Kind.MONEY, "total_deductions": Kind.MONEY, "ssnit_employee": Kind.MONEY,
    "ssnit_employer": Kind.MONEY, "paye": Kind.MONEY,
    # free text that quotes pay or people
    "notes": Kind.TEXT, "reason": Kind.TEXT,
    # never shown
    "password_hash": Kind.SECRET, "password": Kind.SECRET,
}

# Sensitive only in these tables (the same name elsewhere is not): table (without schema) -> column -> kind.
TABLE_COLUMNS: dict[str, dict[str, Kind]] = {
    "history_timelineevent": {"summary": Kind.TEXT, "details": Kind.TEXT},    # "salary GHS 8,500.00 -> ..."
    "history": {"summary": Kind.TEXT},                                         # the history import file
    "payroll_payslipline": {"amount": Kind.MONEY, "description": Kind.TEXT},
    "core_auditlog": {"before": Kind.TEXT, "after": Kind.TEXT},               # copies of changed rows
    "core_alert": {"error_message": Kind.TEXT},
}


def _bare(table: str | None) -> str | None:
    return table.rsplit(".", 1)[-1] if table else None


def kind_of(column: str | None, table: str | None = None) -> Kind | None:
    """The kind of personal or pay data `column` (of `table`, or of an import stage's file) holds, or None."""
    if not column:
        return None
    name = column.strip().lower()
    by_table = TABLE_COLUMNS.get(_bare(table) or "", {})
    return by_table.get(name) or COLUMNS.get(name)


def is_sensitive(column: str | None, table: str | None = None) -> bool:
    return kind_of(column, table) is not None


def sensitive_columns(columns: Iterable[str], table: str | None = None) -> list[str]:
    return [c for c in columns if is_sensitive(c, table)]


_EMAIL = re.compile(r"(?P<first>[^@\s'\"<>(),;:]?)[^@\s'\"<>(),;:]*@(?P<domain>[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
SHAPE_LIMIT = 32


def shape(value: str) -> str:
    """Digits as #, letters as x (X when upper case), everything else kept: '4,800.00' -> '#,###.##'."""
    out = []
    for ch in value[:SHAPE_LIMIT]:
        if ch.isdigit():
            out.append("#")
        elif ch.isalpha():
            out.append("X" if ch.isupper() else "x")
        else:
            out.append(ch)
    if len(value) > SHAPE_LIMIT:
        out.append(f"… ({len(value)} characters)")
    return "".join(out)


def mask_email(value: str) -> str:
    match = _EMAIL.fullmatch(value.strip())
    if not match:
        return shape(value)
    return f"{match['first'] or ''}***@{match['domain']}"


def mask(value: object, kind: Kind | None) -> object:
    """`value` as it may be shown: masked when `kind` says it is personal or pay data. None stays None."""
    if value is None or kind is None:
        return value
    text = str(value)
    if text == "":
        return text
    if kind is Kind.EMAIL:
        return mask_email(text)
    if kind is Kind.NAME:
        return text[:1] + "***"
    if kind is Kind.TEXT:
        return f"<text, {len(text)} characters>"
    if kind is Kind.SECRET:
        return "<secret>"
    return shape(text)  # MONEY, IDENTIFIER, DATE


def mask_cell(column: str | None, value: object, table: str | None = None) -> object:
    """The value of `column` as it may be shown in logs, metadata and alerts."""
    return mask(value, kind_of(column, table))


def mask_row(row: Mapping[str, object], table: str | None = None) -> dict[str, object]:
    return {column: mask_cell(column, value, table) for column, value in row.items()}


def mask_rows(headers: Iterable[str], rows: Iterable[Iterable[object]], table: str | None = None) -> list[list[object]]:
    """Rows of a table shown in metadata (validation results, previews), sensitive cells masked."""
    kinds = [kind_of(h, table) for h in headers]
    return [[mask(v, k) for v, k in zip(row, kinds, strict=False)] for row in rows]


def scrub_text(text: str) -> str:
    """A last line of defence for free-form text on its way out (alerts, failure messages): every
    email address in it masked. Code that knows a value's column masks it by column instead."""
    return _EMAIL.sub(lambda m: f"{m['first'] or ''}***@{m['domain']}", text)
