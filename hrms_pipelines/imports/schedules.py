"""The nightly import: `hrms_import` at 02:00 in the deployment's time zone (HRMS_IMPORT_CRON,
HRMS_IMPORT_TIMEZONE), skipped with a reason when no file of the import directory changed since
its last successful import (sha256 against hrms.imports_importrecord)."""


import hashlib
import os

import dagster as dg

from hrms_pipelines.imports import records, shortcuts
from hrms_pipelines.imports.jobs import hrms_import, validate_hr_data
from hrms_pipelines.imports.options import RESOURCE_KEY, ImportOptions, schedule_cron, schedule_timezone
from hrms_pipelines.imports.reader import ImportFileError, inspect_file
from hrms_pipelines.resources import READER, HrmsDatabase
from hrms_pipelines.errors import error_boundary

# The sample's organisation files name leaders before the users file creates them.
NIGHTLY_OPTIONS = {"create_users": True}


def changed_files(hrms_db: HrmsDatabase, options: ImportOptions) -> tuple[list[str], list[str], int]:
    """(changed or new files, unchanged files, the shortcut epoch) of the import directory. A file an
    undo or restore took back the word of (hrms_pipelines.imports.shortcuts) counts as changed."""
    names = [n for n in [options.ladders_file, *options.org_files, options.users_file, options.history_file] if n]
    with hrms_db.connection(READER) as conn:
        last = records.last_success_by_file(conn)
        reset = shortcuts.epoch(conn)
    changed, unchanged = [], []
    for name in names:
        path = options.file(name)
        if not path.exists():
            continue
        sha = inspect_file(path).sha256
        (unchanged if last.get(name, ("", 0))[0] == sha else changed).append(f"{name}:{sha[:12]}")
    return changed, unchanged, reset


@dg.schedule(
    name="hrms_import_nightly",
    job=hrms_import,
    cron_schedule=schedule_cron(),
    execution_timezone=schedule_timezone(),
    description="Nightly import of the files in the import directory; skips when none changed.",
)
@error_boundary
def hrms_import_nightly(context: dg.ScheduleEvaluationContext, hrms_db: HrmsDatabase):
    options = ImportOptions(**NIGHTLY_OPTIONS)
    directory = options.directory()
    if not directory.is_dir():
        return dg.SkipReason(f"import directory {directory} does not exist")
    try:
        changed, unchanged, reset = changed_files(hrms_db, options)
    except ImportFileError as exc:
        changed, unchanged, reset = [str(exc)], [], 0
    if not changed and not unchanged:
        return dg.SkipReason(f"no import file in {directory}")
    if not changed:
        return dg.SkipReason(f"no file in {directory} changed since the last successful import ({', '.join(unchanged)})")
    # the same files after an undo or restore are another night's work: the reset's id is in the key
    run_key = hashlib.sha256("|".join(sorted(changed + unchanged) + ([f"reset:{reset}"] if reset else [])).encode()).hexdigest()[:16]
    return dg.RunRequest(
        run_key=run_key,
        run_config={"resources": {RESOURCE_KEY: {"config": NIGHTLY_OPTIONS}}},
        tags={"hrms/changed_files": ", ".join(changed)[:200]},
    )


@dg.schedule(
    name="validate_hr_data_weekly",
    job=validate_hr_data,
    cron_schedule=os.environ.get("HRMS_VALIDATE_CRON", "0 4 * * 0"),
    execution_timezone=schedule_timezone(),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Whole-table validation of the HR data (validate_hr_data), Sundays 04:00 by default "
                "(HRMS_VALIDATE_CRON). Stopped until turned on: the nightly import validates only what it changed.",
)
@error_boundary
def validate_hr_data_weekly(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=None, tags={"hrms/scheduled": "true"})
