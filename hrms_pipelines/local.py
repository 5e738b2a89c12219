"""Run a command with the project's databases ready: `python -m hrms_pipelines.local run -- CMD ...`.

What `make demo`, `make dev` and the README's commands go through. For whatever the user has not set:
- HRMS_DATABASE_URL: the `hrms` database on the embedded PostgreSQL under .hrms/pgdata
- DAGSTER_PG_URL: a separate `dagster` database on the same server (Dagster's runs and event logs)
- DAGSTER_HOME: .hrms/dagster_home, holding a link to the project's dagster.yaml
- HRMS_IMPORT_CREATE_USERS=true when HRMS_IMPORT_DIR is unset (the bundled sample needs it)
Everything it starts runs with umask 077 (PRIVATE_UMASK): whatever Dagster, PostgreSQL or a library
writes (compute logs, IO-manager outputs, reject files, backups, the log file) is readable by this
user only. A deployment sets the same on its service (systemd `UMask=0077`, `umask 077` in an
entrypoint script).
The embedded server stops when the command ends (Ctrl-C included), unless another process uses it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from hrms_pipelines import settings

PRIVATE_UMASK = 0o077


def prepare_environment(env: dict[str, str]) -> dict[str, str]:
    """Fill in the variables the user left unset; returns the new environment."""
    from hrms_pipelines import embedded

    env = dict(env)
    home = settings.hrms_home()
    home.mkdir(parents=True, exist_ok=True)
    if not env.get(settings.DATABASE_URL_ENV):
        env[settings.DATABASE_URL_ENV] = embedded.hr_database_url()
    if not env.get(settings.DAGSTER_PG_URL_ENV):
        env[settings.DAGSTER_PG_URL_ENV] = embedded.dagster_storage_url()
    if not env.get(settings.IMPORT_DIR_ENV):
        # The bundled sample company names its leaders in the org files before the users file
        # brings them: with its files, "Materialize all" in the UI should just work.
        env.setdefault(settings.IMPORT_CREATE_USERS_ENV, "true")
    if not env.get("DAGSTER_HOME"):
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(exist_ok=True)
        link = dagster_home / "dagster.yaml"
        if not link.exists():
            link.symlink_to(settings.PROJECT_ROOT / "dagster.yaml")
        env["DAGSTER_HOME"] = str(dagster_home)
    return env


def run(command: list[str]) -> int:
    os.umask(PRIVATE_UMASK)  # inherited by the command and everything it starts
    env = prepare_environment(dict(os.environ))
    # Ctrl-C reaches the child (same process group) and the child decides how to stop; this
    # process waits for it, then releases the embedded server. (A Python handler, not SIG_IGN:
    # an ignored signal would stay ignored in the child across exec.)
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        child = subprocess.Popen(command, env=env)
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hrms_pipelines.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run a command with the databases ready")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after `run --`")
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
