"""The Dagster UI as the end-to-end tests run it: `dagster dev` (webserver + daemon) in its own process
group on a free 127.0.0.1 port, on test databases only, plus the GraphQL calls that cross-check what
the browser showed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hrms_pipelines import settings

BOOT_TIMEOUT = 600      # seconds: a cold `dagster dev` on a heavily loaded 2-core machine (load 15-20)
STOP_TIMEOUT = 30
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterUI:
    """A running `dagster dev`; `stop()` ends its whole process group (webserver, daemon, code
    server, run workers)."""

    process: subprocess.Popen
    base_url: str
    env: dict[str, str]
    log_path: Path
    needed_sigkill: bool = False   # set when Ctrl-C alone did not end the group within STOP_TIMEOUT

    # ---- GraphQL ---------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.base_url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def runs(self, **run_filter) -> list[dict]:
        """Runs, newest first, with the tags that tell what launched them."""
        data = self.graphql(
            """query Runs($filter: RunsFilter) { runsOrError(filter: $filter, limit: 50) {
                 __typename ... on Runs { results { runId jobName status tags { key value } } } } }""",
            {"filter": run_filter or None},
        )
        return data["runsOrError"]["results"]

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        """The run's final status (queued -> started -> finished; the daemon dequeues it)."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if status in FINISHED:
                return status
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish within {timeout}s (last status {status}); see {self.log_path}")

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            """query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }""", {"id": run_id})
        return data["runOrError"].get("status")

    def step_stats(self, run_id: str) -> dict[str, str]:
        """step key -> status (SUCCESS, FAILURE, SKIPPED, ...) of the steps that started."""
        data = self.graphql(
            """query Steps($id: ID!) { runOrError(runId: $id) { ... on Run { stepStats { stepKey status } } } }""",
            {"id": run_id})
        return {s["stepKey"]: s["status"] for s in data["runOrError"]["stepStats"]}

    def check_evaluations(self, run_id: str) -> dict[str, bool]:
        """check name -> passed, for every asset check evaluated in the run."""
        data = self.graphql(
            """query Events($id: ID!) { logsForRun(runId: $id, limit: 5000) { __typename
                 ... on EventConnection { events { __typename
                   ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } }""",
            {"id": run_id})
        return {e["evaluation"]["checkName"]: e["evaluation"]["success"]
                for e in data["logsForRun"]["events"] if e["__typename"] == "AssetCheckEvaluationEvent"}

    def wait_for_backfill(self, backfill_id: str, timeout: float = 180) -> str:
        """The backfill's final status (the daemon marks it once its runs have finished)."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            data = self.graphql("""query B($id: String!) { partitionBackfillOrError(backfillId: $id) {
                                     __typename ... on PartitionBackfill { status } } }""", {"id": backfill_id})
            status = data["partitionBackfillOrError"].get("status")
            if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                return status
            time.sleep(1)
        raise AssertionError(f"backfill {backfill_id} did not finish within {timeout}s (last status {status})")

    def materialized_partitions(self, asset: str) -> list[str]:
        data = self.graphql(
            """query P($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
                 assetPartitionStatuses { __typename ... on DefaultPartitionStatuses { materializedPartitions } } } } }""",
            {"key": {"path": [asset]}})
        return data["assetNodeOrError"]["assetPartitionStatuses"]["materializedPartitions"]

    # ---- lifecycle ---------------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether any process of the group is left (the exited leader is reaped first: a zombie counts)."""
        self.process.poll()
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """Ctrl-C to the whole group (dagster dev shuts its children down), SIGKILL after a timeout."""
        if self.process.poll() is None or self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.5)
            if self.alive():
                self.needed_sigkill = True
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 10   # killed children linger until they are reaped
                while time.monotonic() < deadline and self.alive():
                    time.sleep(0.2)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass


def dagster_home(directory: Path, project_root: Path) -> Path:
    """A DAGSTER_HOME holding the project's own dagster.yaml (storage, run queue, pools)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(project_root / "dagster.yaml", directory / "dagster.yaml")
    return directory


def start(project_root: Path, env: dict[str, str], log_path: Path) -> DagsterUI:
    """Start `dagster dev` and wait until the webserver answers and the code location is loaded."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(env, HRMS_DAGSTER_URL=base_url)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(project_root / ".venv" / "bin" / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=project_root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,   # its own process group: stop() reaches every child
            # A shell's background job inherits SIGINT ignored; Python then never installs its
            # KeyboardInterrupt handler and dagster dev would sit out our Ctrl-C. Restore it.
            preexec_fn=_default_sigint,
        )
    ui = DagsterUI(process, base_url, env, log_path)
    try:
        _wait_until_ready(ui)
    except BaseException:
        ui.stop()
        raise
    return ui


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until_ready(ui: DagsterUI) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {ui.process.returncode}:\n{_tail(ui.log_path)}")
        try:
            with urllib.request.urlopen(f"{ui.base_url}/server_info", timeout=5) as response:
                response.read()
            location = ui.graphql(
                """{ workspaceOrError { ... on Workspace { locationEntries { name
                     locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
            entries = location["workspaceOrError"]["locationEntries"]
            states = [e["locationOrLoadError"] for e in entries]
            if states and all(s and s["__typename"] == "RepositoryLocation" for s in states):
                return
            errors = [s for s in states if s and s["__typename"] == "PythonError"]
            if errors:
                raise RuntimeError(f"code location failed to load: {errors[0]['message']}")
            last = f"location states {states}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = str(exc)
        time.sleep(1)
    raise RuntimeError(f"dagster dev not ready after {BOOT_TIMEOUT}s ({last}):\n{_tail(ui.log_path)}")


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def environment(base_env: dict[str, str], *, database_url: str, dagster_storage_url: str, home: Path,
                import_dir: Path, project_root: Path, migrations_dir: Path) -> dict[str, str]:
    """cli_base_env + the test's HR database, its own Dagster storage, DAGSTER_HOME and folders."""
    return dict(
        base_env,
        **{
            settings.DATABASE_URL_ENV: database_url,
            settings.DAGSTER_PG_URL_ENV: dagster_storage_url,
            "DAGSTER_HOME": str(dagster_home(home / "dagster_home", project_root)),
            settings.IMPORT_DIR_ENV: str(import_dir),
            settings.MIGRATIONS_DIR_ENV: str(migrations_dir),
            settings.BACKUP_DIR_ENV: str(home / "backups"),
            settings.HOME_ENV: str(home / "hrms_home"),
        },
    )
