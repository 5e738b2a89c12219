"""Bounded input: how big a cell, a file and a file's row count may be (deployment configuration).

    HRMS_IMPORT_MAX_CELL_BYTES   bytes of one cell as written in the file      default 65,536 (64 KiB)
    HRMS_IMPORT_MAX_FILE_BYTES   bytes of one import file (and of the parts of  default 1,073,741,824 (1 GiB)
                                 an .xlsx once decompressed)
    HRMS_IMPORT_MAX_ROWS         data rows of one file (header excluded)         default 10,000,000

They are checked while the file streams, before anything is staged: a 20 MiB cell is refused after
reading at most one block past the limit, never held whole in memory nor written to a log; a file
larger than the limit is refused from its size before a byte of it is read. Exceeding one is a
`LimitExceeded` (an ImportFileError) naming the file, the limit, the value found, where (row and
column for a cell) and the environment variable that raises it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hrms_pipelines.imports.files.errors import ImportFileError

MAX_CELL_BYTES_ENV = "HRMS_IMPORT_MAX_CELL_BYTES"
MAX_FILE_BYTES_ENV = "HRMS_IMPORT_MAX_FILE_BYTES"
MAX_ROWS_ENV = "HRMS_IMPORT_MAX_ROWS"

DEFAULT_MAX_CELL_BYTES = 64 * 1024
DEFAULT_MAX_FILE_BYTES = 1024 ** 3
DEFAULT_MAX_ROWS = 10_000_000


@dataclass(frozen=True)
class Limits:
    cell_bytes: int = DEFAULT_MAX_CELL_BYTES
    file_bytes: int = DEFAULT_MAX_FILE_BYTES
    rows: int = DEFAULT_MAX_ROWS


def _read(env: str, default: int) -> int:
    raw = (os.environ.get(env) or "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{env}={raw!r}: expected a whole number greater than 0 (default {default:,})")
    return int(raw)


def current() -> Limits:
    """The deployment's limits, read from the environment at each call (a test or an operator can change them)."""
    return Limits(
        cell_bytes=_read(MAX_CELL_BYTES_ENV, DEFAULT_MAX_CELL_BYTES),
        file_bytes=_read(MAX_FILE_BYTES_ENV, DEFAULT_MAX_FILE_BYTES),
        rows=_read(MAX_ROWS_ENV, DEFAULT_MAX_ROWS),
    )


def how_to_raise(env: str) -> str:
    return (f"Nothing was written. Split the file, or have the operator raise {env} in the deployment's "
            "environment (it is not a run-config option) and run the import again.")


class LimitExceeded(ImportFileError):
    """A file over one of the deployment's input limits (nothing was staged)."""


def exceeded(message: str, env: str) -> LimitExceeded:
    return LimitExceeded(f"{message} {how_to_raise(env)}")
