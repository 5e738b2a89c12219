"""Row 1 that is not a header: told by the SHAPE of its cells, never by their values.

An export saved without its header row puts the first person in row 1: their email, employee number,
names. Quoting row 1 back ("Found (excerpt): …") would send that person to the event log, the compute
log and the alert, so a row 1 that does not look like a header is described cell by cell by shape
("cell 1 an e-mail address, cell 2 text of 8 characters, cell 3 a date, cell 4 empty") and the row
itself goes only to the 0600 reject file (as rejected row 1).

Row 1 does not look like a header when none of its cells is a column the file may have, or when any
of its cells is shaped like data (an e-mail address, a number, a date).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NUMBER = re.compile(r"^[-+]?(\d[\d,  '_]*)?(\.\d+)?([eE][-+]?\d+)?%?$")
DATE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T]\d{1,2}:\d{2}(:\d{2})?)?$")
BLANK_PREFIX = "(blank column "
LISTED = 30


def shape(cell: str) -> str:
    """What a cell is, without what it says: 'an e-mail address', 'a number', 'a date', 'empty',
    'text of 7 characters'."""
    text = cell.strip()
    if not text or text.startswith(BLANK_PREFIX):
        return "empty"
    if EMAIL.match(text):
        return "an e-mail address"
    if DATE.match(text):
        return "a date"
    if any(ch.isdigit() for ch in text) and NUMBER.match(text):
        return "a number"
    if any(ch.isdigit() for ch in text) and not any(ch.isalpha() for ch in text):
        return f"digits and signs ({len(text)} characters)"
    if any(ch.isdigit() for ch in text):
        return f"text with digits of {len(text)} characters"
    return f"text of {len(text)} characters"


def data_shaped(cell: str) -> bool:
    return shape(cell) in ("an e-mail address", "a date", "a number")


def looks_like_header(cells: list[str], known: Iterable[str]) -> bool:
    known = set(known)
    return any(c in known for c in cells) and not any(data_shaped(c) for c in cells)


def describe(cells: list[str]) -> str:
    """'15 cells: cell 1 an e-mail address, cell 2 a number, …' (shapes only)."""
    shown = [f"cell {i} {shape(c)}" for i, c in enumerate(cells[:LISTED], start=1)]
    more = f", … ({len(cells) - LISTED} more)" if len(cells) > LISTED else ""
    return f"{len(cells)} cell{'s' if len(cells) != 1 else ''}, " + ", ".join(shown) + more


def not_a_header_message(file_name: str, cells: list[str], known: Iterable[str]) -> str:
    return (f"row 1 does not look like a header: {describe(cells)}. Row 1 of {file_name} must hold the column "
            f"names; is this an export saved without its header row? Expected columns: {', '.join(known)}. "
            "Add the header row (or export again with headers) and import again.")
