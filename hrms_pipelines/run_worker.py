"""A run whose process dies is marked failed by Dagster's run monitoring, not left STARTED forever.

Dagster's daemon monitors STARTED runs only through the run launcher's worker health check, and the
default launcher has none; a `dagster job execute` run (CI, cron) is not even launched by a
launcher. So:

- every run of this code location records its worker when its steps start (`hrms_in_process_executor`,
  the project's executor: Dagster's in-process executor plus this record): run tags `hrms/worker_host`
  (host name and boot id), `hrms/worker_pid` and `hrms/worker_start` (the process's start time, so a
  reused pid is not mistaken for the run's);
- `HrmsRunLauncher` (dagster.yaml's run_launcher) is Dagster's DefaultRunLauncher with a health
  check over those tags: on the worker's host, a pid that no longer runs (or runs another process)
  is FAILED, and the daemon's run monitoring (dagster.yaml `run_monitoring`) marks the run failed.
  A run recorded on another host, or not recorded yet, is reported RUNNING (unknown is not dead);
  `run_monitoring.max_runtime_seconds` bounds those if a deployment wants it.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

HOST_TAG = "hrms/worker_host"
PID_TAG = "hrms/worker_pid"
START_TAG = "hrms/worker_start"


@cache
def host_identity() -> str:
    """This host's name and boot id: a pid means something only on the host (and boot) it came from."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22); None when
    there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def record_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    pid = os.getpid()
    instance.add_run_tags(run_id, {HOST_TAG: host_identity(), PID_TAG: str(pid), START_TAG: process_start(pid) or ""})


def worker_status(tags: dict[str, str]) -> CheckRunHealthResult:
    host, pid, start = tags.get(HOST_TAG), tags.get(PID_TAG), tags.get(START_TAG)
    if not host or not pid or not pid.isdigit():
        return CheckRunHealthResult(WorkerStatus.RUNNING, "the run's worker is not recorded yet")
    if host != host_identity():
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"the run's worker is on {host.split('/')[0]}")
    now = process_start(int(pid))
    if now is None or (start and now != start):
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run's process (pid {pid}) is gone: it was killed or "
                                                         "crashed before it could record the run's end")
    return CheckRunHealthResult(WorkerStatus.RUNNING, f"pid {pid} runs")


class HrmsRunLauncher(DefaultRunLauncher):
    """Dagster's default run launcher, with a worker health check for run monitoring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        return worker_status(dict(run.tags))


class _RecordingInProcessExecutor(InProcessExecutor):
    def execute(self, plan_context, execution_plan):
        record_worker(plan_context.instance, plan_context.run_id)
        yield from super().execute(plan_context, execution_plan)


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def hrms_in_process_executor(init_context: dg.InitExecutorContext) -> InProcessExecutor:
    """Dagster's in-process executor (every step in the run's one process), recording the run's worker
    for run monitoring (see the module's docstring)."""
    from dagster._core.definitions.executor_definition import _core_in_process_executor_creation

    base = _core_in_process_executor_creation(init_context.executor_config)
    return _RecordingInProcessExecutor(retries=base.retries, marker_to_close=None,
                                       step_dependency_config=base.step_dependency_config)
