"""One `dagster dev` (webserver + daemon) for every GraphQL test outside the browser package, booted
once per session (a cold boot is the biggest fixed cost of those suites), on a hostile deployment:

- configured roots (import folder with the sample company and planted traps: a symlink, a FIFO, a
  hidden file, a device when root; a logs folder with a planted symlink and FIFO; a copy of the
  migrations with a symlink to an `outside` folder), and an `outside` folder no run may read or touch;
- the service's secrets set to canaries (every duty's password, the SMTP password, a webhook URL
  whose path is a canary) so a test can prove no value of the worker's environment reaches
  Dagster's storage, compute logs or an alert;
- the failure alerts' webhook pointed at a capture server in the test process (`alerts`).

Fixtures (registered by conftest.py): `hostile_deployment`, `shared_webserver`, `alert_capture`.
`launch` / `run_messages` are the GraphQL calls the suites share; `graphql_as_other_user` posts a
query as another OS user (`nobody`), a launcher with no access to the service's files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from hrms_pipelines import roles, settings
from hrms_pipelines_tests.conftest import _url, create_dagster_storage, create_database, drop_database
from hrms_pipelines_tests.e2e import ui as dagster_ui_server

CANARY = f"CANARY-{uuid.uuid4().hex}"
SAMPLE = settings.PROJECT_ROOT / "seeds" / "sample"
# The service's secrets, each a canary of its own: none may appear anywhere a launcher can read.
SECRET_CANARIES = {duty.password_env: f"pw{duty.key}{uuid.uuid4().hex}" for duty in roles.Duty}
SECRET_CANARIES["HRMS_ALERT_SMTP_PASSWORD"] = f"smtp{uuid.uuid4().hex}"
WEBHOOK_TOKEN = f"hooktoken{uuid.uuid4().hex}"

LAUNCH = """
mutation Launch($job: String!, $config: RunConfigData, $tags: [ExecutionTag!]) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "hrms_pipelines", repositoryName: "__repository__", jobName: $job},
    runConfigData: $config, executionMetadata: {tags: $tags}}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

EVENTS = """
query Events($id: ID!) { logsForRun(runId: $id, limit: 5000) { __typename
  ... on EventConnection { events { __typename ... on MessageEvent { message }
    ... on ErrorEvent { error { message } } } } } }"""


def launch(ui, job: str, config: dict, tags: dict | None = None) -> dict:
    tag_list = [{"key": k, "value": v} for k, v in (tags or {}).items()]
    return ui.graphql(LAUNCH, {"job": job, "config": config, "tags": tag_list})["launchRun"]


def run_messages(ui, run_id: str) -> str:
    events = ui.graphql(EVENTS, {"id": run_id})["logsForRun"]["events"]
    return "\n".join(f"{e.get('message') or ''}\n{(e.get('error') or {}).get('message') or ''}" for e in events)


# A GraphQL client in the system Python's standard library only: it runs as another OS user, who
# cannot read this project, its virtual environment or the service's folders.
_CLIENT = """
import json, sys, urllib.request
url, body = sys.argv[1], sys.stdin.read().encode()
request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(request, timeout=120) as response:
    sys.stdout.write(response.read().decode())
"""
OTHER_USER = 65534  # nobody


def can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None and Path("/usr/bin/python3").exists()


def as_other_user(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`argv` run as `nobody` (uid and gid 65534, no supplementary groups), in /, with an empty environment."""
    return subprocess.run(
        ["setpriv", f"--reuid={OTHER_USER}", f"--regid={OTHER_USER}", "--clear-groups", *argv],
        input=stdin, capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=180)


def graphql_as_other_user(ui, query: str, variables: dict) -> dict:
    done = as_other_user("/usr/bin/python3", "-I", "-c", _CLIENT, f"{ui.base_url}/graphql",
                         stdin=json.dumps({"query": query, "variables": variables}))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert not payload.get("errors"), payload
    return payload["data"]


class _PostCapture(BaseHTTPRequestHandler):
    """A chat webhook's stand-in: every POST body lands in its server's `received` list."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def capture_posts(received: list[bytes]) -> HTTPServer:
    """A local HTTP server (free port, its own thread) appending every POST body to `received`;
    `shutdown()` stops it."""
    server = HTTPServer(("127.0.0.1", 0), _PostCapture)
    server.received = received
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# Every alert the shared deployment's webhook received (alert_capture).
ALERTS: list[bytes] = []


@pytest.fixture(scope="session")
def alert_capture():
    ALERTS.clear()
    server = capture_posts(ALERTS)
    yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/{WEBHOOK_TOKEN}"
    server.shutdown()


def deployment_env(dirs) -> dict[str, str]:
    return {settings.IMPORT_DIR_ENV: str(dirs["imports"]), settings.BACKUP_DIR_ENV: str(dirs["backups"]),
            settings.LOGS_DIR_ENV: str(dirs["logs"]), settings.REJECTS_DIR_ENV: str(dirs["rejects"]),
            settings.KEYS_DIR_ENV: str(dirs["keys"]), settings.HOME_ENV: str(dirs["home"]),
            settings.MIGRATIONS_DIR_ENV: str(dirs["migrations"])}


@pytest.fixture(scope="session")
def hostile_deployment(tmp_path_factory, pg_admin_url, migrated_template):
    """The configured roots, with traps, and an `outside` folder with planted files no run may read."""
    root = tmp_path_factory.mktemp("hostile")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"email,first_name,last_name\n{CANARY}@nowhere.example,{CANARY},x\n")
    (outside / "target.log").write_text(f"{CANARY}\n")
    (outside / "0001_evil.up.sql").write_text("COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned';\n")
    imports = root / "imports"
    shutil.copytree(SAMPLE, imports)
    (imports / "link.csv").symlink_to(outside / "secret.csv")
    os.mkfifo(imports / "fifo.csv")
    if os.geteuid() == 0:
        os.mknod(imports / "device.csv", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    (imports / ".hidden.csv").write_text((SAMPLE / "users.csv").read_text())
    logs = root / "logs"
    logs.mkdir(mode=0o700)
    (logs / "planted.log").symlink_to(outside / "target.log")
    os.mkfifo(logs / "pipe.log")
    migrations = root / "migrations"
    shutil.copytree(settings.migrations_dir(), migrations)
    (migrations / "evil").symlink_to(outside, target_is_directory=True)
    dirs = {"root": root, "outside": outside, "imports": imports, "logs": logs, "migrations": migrations,
            "backups": root / "backups", "rejects": root / "rejects", "keys": root / "keys", "home": root / "home"}
    name = create_database(pg_admin_url, template=migrated_template, prefix="hostile")
    dirs["database_url"] = _url(pg_admin_url, name)
    yield dirs
    drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def shared_webserver(hostile_deployment, cli_base_env, pg_admin_url, alert_capture):
    """The real webserver (+ daemon, which dequeues runs and sends failure alerts) on a free local
    port, on the test databases, its secrets set to canaries. Stopped at the end of the session."""
    storage, storage_url = create_dagster_storage(pg_admin_url, prefix="dagster_shared")
    deployment = hostile_deployment
    env = dagster_ui_server.environment(
        cli_base_env, database_url=deployment["database_url"], dagster_storage_url=storage_url,
        home=deployment["root"] / "dagster", import_dir=deployment["imports"], project_root=settings.PROJECT_ROOT,
        migrations_dir=deployment["migrations"])
    env.update(deployment_env(deployment))
    env.update(SECRET_CANARIES)
    env["HRMS_ALERT_WEBHOOK_URL"] = alert_capture
    env.pop(settings.ENVIRONMENT_ENV, None)  # a deployment that did not say it is a development one
    ui = dagster_ui_server.start(settings.PROJECT_ROOT, env, deployment["root"] / "dagster-dev.log")
    try:
        yield ui
    finally:
        ui.stop()
        drop_database(pg_admin_url, storage)
