"""The import stages' way to read files (kept as the one import path the stages use).

Everything lives in `hrms_pipelines.imports.files`: this module re-exports its public API with the
names and signatures the stage code has always used.
"""

from hrms_pipelines.imports.files import (  # noqa: F401
    CHUNK_ROWS, FileInfo, ImportFileError, LimitExceeded, Limits, Reject, RejectReport, check_columns, copy_to_staging,
    create_staging, failures_to_rejects, inspect_file, load_file, neutralise, normalise_header, read_chunks,
    validate_chunks,
)
from hrms_pipelines.imports.files.errors import SHOWN_REJECTS  # noqa: F401
from hrms_pipelines.imports.files.source import BLOCK  # noqa: F401
