"""Reading import files: CSV and Excel, opened once, bounded, checked before anything is staged.

- `source`   one open file, read by every pass with `os.pread` at its own offsets
- `limits`   bytes per cell, bytes per file, rows per file (HRMS_IMPORT_MAX_*)
- `sniff`    what a file really is (gzip, xlsx, PDF, UTF-16/32 named .csv)
- `scan`     the CSV structure in the same streaming pass as the sha256 (numpy)
- `xlsx`     Excel workbooks through python-calamine, converted to the same CSV stream
- `xlsx_parts` the workbook's parts streamed before calamine reads them (bombs, formats, formulas)
- `numfmt`   the text Excel displays for a number under a number format
- `header`   a row 1 that is not a header, described by the shape of its cells
- `inspect`  `inspect_file` / `FileInfo` / `check_columns`
- `load`     pandas + Pandera and COPY into staging from the same bytes (`load_file`)
- `errors`   `ImportFileError`, `Reject`, `RejectReport` (masked messages, full-row reject files)
"""

from hrms_pipelines.imports.files.errors import ImportFileError, Reject, RejectReport, neutralise
from hrms_pipelines.imports.files.inspect import FileInfo, LimitExceeded, check_columns, inspect_file, normalise_header
from hrms_pipelines.imports.files.limits import Limits
from hrms_pipelines.imports.files.load import (
    CHUNK_ROWS, copy_to_staging, create_staging, failures_to_rejects, load_file, read_chunks, validate_chunks,
)

__all__ = [
    "CHUNK_ROWS", "FileInfo", "ImportFileError", "Limits", "LimitExceeded", "Reject", "RejectReport", "check_columns",
    "copy_to_staging", "create_staging", "failures_to_rejects", "inspect_file", "load_file", "neutralise",
    "normalise_header", "read_chunks", "validate_chunks",
]
