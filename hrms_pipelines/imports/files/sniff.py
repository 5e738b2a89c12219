"""What a file really is, from its first bytes: a file named .csv that is gzip, zip/xlsx, PDF, a
legacy .xls, or UTF-16/UTF-32 text (with or without a byte order mark) gets a message saying what it
is and how to save it as CSV UTF-8, instead of a confusing "missing column 'e\\0m\\0a\\0i\\0l'"."""

from __future__ import annotations

import codecs
import io
import zipfile

SAVE_AS_CSV = ("Open it in Excel (or LibreOffice) and save it with File > Save As > 'CSV UTF-8 (Comma delimited) (*.csv)', "
               "then import that file.")


def _utf_without_bom(head: bytes) -> str | None:
    """UTF-16/32 text without a BOM: ASCII characters leave tell-tale zero bytes in fixed places."""
    sample = head[:4096]
    sample = sample[: len(sample) // 4 * 4]
    if len(sample) < 8 or b"\0" not in sample:
        return None
    zeros = [sum(1 for i in range(k, len(sample), 4) if sample[i] == 0) for k in range(4)]
    quarter = len(sample) // 4
    mostly = [z >= 0.9 * quarter for z in zeros]
    rarely = [z <= 0.1 * quarter for z in zeros]
    if rarely[0] and mostly[1] and mostly[2] and mostly[3]:
        return "UTF-32 (little-endian) text without a byte order mark"
    if mostly[0] and mostly[1] and mostly[2] and rarely[3]:
        return "UTF-32 (big-endian) text without a byte order mark"
    if rarely[0] and mostly[1] and rarely[2] and mostly[3]:
        return "UTF-16 (little-endian) text without a byte order mark"
    if mostly[0] and rarely[1] and mostly[2] and rarely[3]:
        return "UTF-16 (big-endian) text without a byte order mark"
    return None


def _zip_kind(source) -> str:
    try:
        with zipfile.ZipFile(source.filelike()) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a zip archive (damaged or incomplete)"
    if "xl/workbook.xml" in names:
        return "an Excel workbook (.xlsx)"
    if "content.xml" in names and "mimetype" in names:
        return "an OpenDocument spreadsheet (.ods)"
    return "a zip archive"


def what_is_it(head: bytes, source) -> str | None:
    """A description of a file that is not CSV text ('a gzip-compressed file', ...), else None."""
    if head.startswith(codecs.BOM_UTF32_LE):
        return "UTF-32 (little-endian) text (byte order mark at byte 0)"
    if head.startswith(codecs.BOM_UTF32_BE):
        return "UTF-32 (big-endian) text (byte order mark at byte 0)"
    if head.startswith(codecs.BOM_UTF16_LE):
        return "UTF-16 (little-endian) text (byte order mark at byte 0)"
    if head.startswith(codecs.BOM_UTF16_BE):
        return "UTF-16 (big-endian) text (byte order mark at byte 0)"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(source)
    if head.startswith(b"%PDF-"):
        return "a PDF document"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "an Excel 97-2003 workbook (.xls) or another Office file (or a password-protected .xlsx)"
    if head.startswith((b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"Rar!")):
        return "a compressed archive"
    return _utf_without_bom(head)


def not_csv_message(name: str, kind: str) -> str:
    text = f"{name}: this file is {kind}, not CSV text in UTF-8"
    if kind.startswith("an Excel workbook (.xlsx)"):
        return (f"{text}. It can be imported as it is: give it the .xlsx extension (for example "
                f"{name.rsplit('.', 1)[0]}.xlsx) and name that file in the run config; or {SAVE_AS_CSV[0].lower()}{SAVE_AS_CSV[1:]}")
    if kind.startswith(("a gzip", "a zip", "a compressed")):
        return f"{text}. Extract the CSV file from it and import that (saved as CSV UTF-8)."
    if kind.startswith("a PDF"):
        return f"{text}. Export the data from the system it came from as CSV UTF-8 (a PDF cannot be imported)."
    return f"{text}. {SAVE_AS_CSV}"


def _looks_textual(head: bytes) -> bool:
    try:
        io.TextIOWrapper(io.BytesIO(head[:256]), encoding="utf-8").read()
    except UnicodeDecodeError:
        return False
    return b"\0" not in head[:256]
