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

import logging
import re
from collections.abc import Iterable, Mapping
from enum import Enum

from hrms_pipelines import redaction


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
    "payroll_payslipline": {"amount": Kind.MONEY, "line_total": Kind.MONEY, "description": Kind.TEXT},
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


# An address, or anything shaped like one: the local part may be malformed (`a@@b.org` is masked whole).
_EMAIL = re.compile(r"(?P<first>[^@\s'\"<>(),;:|]?)[^\s'\"<>(),;:|]*@(?P<domain>[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
SHAPE_LIMIT = 32
_MASK_MARKER = re.compile(r"<text, \d+ characters>|<secret>")


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
    if text == "" or _MASK_MARKER.fullmatch(text):
        return text   # empty, or already masked (masking twice must not change what is shown)
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


# ---------------------------------------------------------------------------------------------
# Text that quotes values: PostgreSQL's messages, and any free text on its way out

# A double-quoted name right after one of these words is an identifier, not a value:
# relation "hrms.x", column "salary", constraint "x_key", type "numeric", at or near "SELEC" ...
_IDENTIFIER_WORDS = frozenset({
    "relation", "column", "columns", "constraint", "table", "type", "schema", "index", "function", "procedure",
    "database", "role", "sequence", "view", "operator", "extension", "trigger", "domain", "policy", "encoding",
    "tablespace", "collation", "parameter", "savepoint", "cursor", "statement", "portal", "near", "language",
    "server", "publication", "subscription", "aggregate", "rule", "conversion", "attribute", "partition", "lock",
})
_QUOTED = re.compile(r'(?P<word>\b[A-Za-z_]+ )?"(?P<value>(?:[^"\n]|"")*)"')
# DETAIL: Key (email)=(a@b.org) already exists. / Key (manager_id)=(7) is not present in table "x".
_KEY = re.compile(r'(?P<head>\b[Kk]ey \()(?P<columns>[^\n]+?)(?P<mid>\)=\()(?P<values>[^\n]*?)(?P<tail>\)(?=[ .,;:)]|$))')
# DETAIL: Failing row contains (7, a@b.org, 4800.00, null).
_FAILING_ROW = re.compile(r"(?P<head>Failing row contains \()[^\n]*\)")
# CONTEXT: COPY stg_history, line 5, column salary: "4800.00"   /   COPY stg_users, line 2: "whole,line"
_COPY_CELL = re.compile(r'(?P<head>COPY [^,\n]+, line \d+, column (?P<column>[^:\n]+): )"(?P<value>[^\n]*)"')
_COPY_LINE = re.compile(r'(?P<head>COPY [^,\n]+, line \d+: )"[^\n]*"')
# CONTEXT: unnamed portal parameter $1 = '4800.00'
_PARAMETER = re.compile(r"(?P<head>parameter \$\d+ = )'(?:[^'\n]|'')*'")
# The code's own messages: "history.csv row 5, column salary, value '4800.00': ..." and
# "value '4800.00' for column salary (numeric) was refused ..."
_REPR = r"""(?P<q>['"])(?P<value>(?:\\.|(?!(?P=q))[^\\\n])*)(?P=q)"""
_COLUMN_VALUE = re.compile(r"(?P<head>\bcolumn (?P<column>[A-Za-z_][A-Za-z0-9_]*), value )" + _REPR)
_VALUE_FOR_COLUMN = re.compile(r"(?P<head>\bvalue )" + _REPR + r"(?P<tail> for column (?P<column>[A-Za-z_][A-Za-z0-9_]*))")


def _split_top_level(text: str) -> list[str]:
    """`a, lower(b, c), d` -> ['a', 'lower(b, c)', 'd'] (commas inside parentheses do not split)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += ch == "("
        depth -= ch == ")"
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _kind_of_expression(expression: str, table: str | None) -> Kind | None:
    """The kind of a key column as PostgreSQL names it: `email`, or an index expression `lower(btrim(email))`."""
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression):
        if kind := kind_of(word, table):
            return kind
    return None


def _mask_key(match: re.Match, table: str | None) -> str:
    kinds = [_kind_of_expression(c, table) for c in _split_top_level(match["columns"])]
    values = match["values"]
    if not any(kinds):
        shown = values
    else:
        parts = values.split(", ")   # PostgreSQL prints a key's values unquoted, joined by ", "
        if len(parts) == len(kinds):
            shown = ", ".join(str(mask(v, k)) for v, k in zip(parts, kinds, strict=True))
        else:                        # a value holds ", ": which part is which is unknown, so all are masked
            shown = shape(values)
    return f"{match['head']}{match['columns']}{match['mid']}{shown}{match['tail']}"


def _mask_known_column(value: str, column: str | None, table: str | None) -> str:
    """A value whose column may be known: masked by that column's kind (kept when it is not sensitive);
    a value of an unknown column shows only its shape."""
    if column is None:
        return shape(value)
    return str(mask(value, kind_of(column.strip(), table)))


def mask_database_detail(text: str, table: str | None = None) -> str:
    """PostgreSQL's DETAIL or CONTEXT text with the row values it quotes masked: key values by their
    column, failing rows and COPY lines left out, COPY cells by their column, bind parameters by shape."""
    text = _KEY.sub(lambda m: _mask_key(m, table), text)
    text = _FAILING_ROW.sub(lambda m: f"{m['head']}values not shown)", text)
    text = _COPY_CELL.sub(lambda m: f'{m["head"]}"{_mask_known_column(m["value"], m["column"], table)}"', text)
    text = _COPY_LINE.sub(lambda m: f"{m['head']}(the line is not shown)", text)
    return _PARAMETER.sub(lambda m: f"{m['head']}'<value>'", text)


def mask_database_message(text: str, *, column: str | None = None, table: str | None = None,
                          identifiers: Iterable[str] = ()) -> str:
    """PostgreSQL's primary message (or HINT, or an unrecognised CONTEXT line) with every double-quoted
    value masked: `invalid input syntax for type numeric: "4,800.00"` -> `...: "#,###.##"`. Quoted
    identifiers stay (`relation "x"`, `constraint "x_key"`, or any name in `identifiers`); a value
    is masked by `column` when the caller knows which column it came from, else shown by its shape."""
    keep = {i for i in identifiers if i}

    def replace(match: re.Match) -> str:
        word = (match["word"] or "").strip().lower()
        value = match["value"]
        if word in _IDENTIFIER_WORDS or value in keep:
            return match.group(0)
        return f'{match["word"] or ""}"{_mask_known_column(value, column, table)}"'

    return _QUOTED.sub(replace, mask_database_detail(text, table))


def _mask_repr(match: re.Match) -> str:
    kind = kind_of(match["column"])
    if kind is None:
        return match.group(0)
    masked = str(mask(match["value"], kind)).replace("\\", "\\\\").replace(match["q"], "\\" + match["q"])
    return f"{match['head']}{match['q']}{masked}{match['q']}{match.groupdict().get('tail') or ''}"


def scrub_text(text: str) -> str:
    """A last line of defence for free-form text on its way out (alerts, failure messages, log lines):
    every email address in it masked, and the forms that quote a row value masked where they are
    recognisable: PostgreSQL's `Key (col)=(value)`, `Failing row contains (...)`, COPY context lines,
    and the code's own `column salary, value '4800.00'` / `value '4800.00' for column salary`.
    Code that knows a value's column masks it by column instead; this catches what slips through.
    The service's own secrets (passwords, URLs, keys) are redacted first (hrms_pipelines.redaction)."""
    text = redaction.redact_secrets(text)
    text = mask_database_detail(text)
    text = _COLUMN_VALUE.sub(_mask_repr, text)
    text = _VALUE_FOR_COLUMN.sub(_mask_repr, text)
    return _EMAIL.sub(lambda m: f"{m['first'] or ''}***@{m['domain']}", text)


class ScrubFilter(logging.Filter):
    """A logging filter that passes every record's message through `scrub_text` (the message is
    formatted first, so values passed as arguments are scrubbed too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as Python would, unscrubbed args dropped
            message = str(record.msg)
        record.msg = scrub_text(message)
        record.args = ()
        return True


SCRUB_FILTER = ScrubFilter()


def scrub_logger(logger: logging.Logger) -> logging.Logger:
    """`logger` with SCRUB_FILTER on it (added once): every message it handles is scrubbed."""
    if SCRUB_FILTER not in logger.filters:
        logger.addFilter(SCRUB_FILTER)
    return logger
