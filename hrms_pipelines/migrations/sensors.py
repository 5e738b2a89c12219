"""A sensor on the migration files: a `check_migrations` run for every new or changed file.

The cursor is a JSON map of file (relative to the migrations folder) -> sha256 of its content,
not a timestamp: touching a file changes nothing, editing it back and forth is seen, and the run
key (a hash of the files and hashes to check) makes a repeated evaluation request nothing twice.
A deleted down file makes its migration irreversible, so its up file is checked again; other
deletions only update the cursor.

It starts RUNNING: it only reads files (a few dozen hashes every 30 s) and a safety net that has
to be switched on protects nobody.
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from hrms_pipelines import settings
from hrms_pipelines.migrations.check_job import check_migrations
from hrms_pipelines.errors import error_boundary


def file_hashes(root) -> dict[str, str]:
    if not root.is_dir():
        return {}
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.glob("*/*.sql"))
        if path.is_file()
    }


@dg.sensor(
    job=check_migrations,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Checks new and changed files under sql/migrations with the migration safety analyzer.",
)
@error_boundary
def migration_files_sensor(context: dg.SensorEvaluationContext):
    root = settings.migrations_dir()
    current = file_hashes(root)
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    new = sorted(p for p in current if p not in previous)
    changed = sorted(p for p in current if p in previous and previous[p] != current[p])
    deleted = sorted(p for p in previous if p not in current)
    to_check = set(new) | set(changed)
    for path in deleted:
        if path.endswith(".down.sql") and (up := path[: -len(".down.sql")] + ".up.sql") in current:
            to_check.add(up)
    cursor = json.dumps(current, sort_keys=True)
    if not to_check:
        context.update_cursor(cursor)
        if deleted:
            return dg.SkipReason(f"only deletions ({', '.join(deleted)}); nothing left to check")
        return dg.SkipReason(f"no new or changed migration files under {root} ({len(current)} unchanged)")
    checked = sorted(to_check)
    run_key = hashlib.sha256("\n".join(f"{p}:{current[p]}" for p in checked).encode()).hexdigest()[:32]
    context.update_cursor(cursor)
    context.log.info(f"new: {new}; changed: {changed}; deleted: {deleted}")
    return dg.RunRequest(
        run_key=run_key,
        run_config={"ops": {"check_migration_files": {"config": {"paths": checked}}}},
        tags={"hrms/migration-files": ",".join(checked)[:200]},
    )
