"""Dagster's own storage (dagster-postgres, on DAGSTER_PG_URL or else the embedded server) and its
compute logs (the stdout/stderr of every run, on local disk, private to the service user).

`dagster.yaml` names this class so that every way of running the project stores runs, event logs
and schedules in PostgreSQL, including a bare `dagster job execute -m hrms_pipelines -j NAME` in a
fresh clone with nothing set: then the `dagster` database of the embedded server under .hrms/ serves.

It is dagster-postgres's own `DagsterPostgresStorage`; only the URL's source differs. The parts it
hands to other processes (run workers, the daemon) carry `postgres_url` as an `env:` reference when
the URL came from the environment (so no password is written down), else the embedded server's
socket URL, which holds none.

`PrivateComputeLogManager` is Dagster's LocalComputeLogManager with every folder it creates 0700
and every file 0600, whatever the process umask: the captured stdout/stderr of a run is Dagster's
console log of it, which names files, rows and (masked) values of HR data.
"""

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from dagster import Field, Float, StringSource
from dagster._core.storage.compute_log_manager import ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from hrms_pipelines import settings

COMPUTE_LOGS_DIR_ENV = "HRMS_COMPUTE_LOGS_DIR"


class HrmsPostgresStorage(DagsterPostgresStorage):
    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        if os.environ.get(settings.DAGSTER_PG_URL_ENV):
            url = os.environ[settings.DAGSTER_PG_URL_ENV]
            portable = {"postgres_url": {"env": settings.DAGSTER_PG_URL_ENV}}
        else:
            from hrms_pipelines import embedded

            url = embedded.dagster_storage_url()
            portable = {"postgres_url": url}
        storage = cls(postgres_url=url, inst_data=inst_data)
        storage._portable_config_yaml = yaml.safe_dump(portable)
        return storage

    def _part(self, class_name: str) -> ConfigurableClassData:
        return ConfigurableClassData("dagster_postgres", class_name, self._portable_config_yaml)

    @property
    def event_storage_data(self):
        return self._part("PostgresEventLogStorage")

    @property
    def run_storage_data(self):
        return self._part("PostgresRunStorage")

    @property
    def schedule_storage_data(self):
        return self._part("PostgresScheduleStorage")


def compute_logs_dir() -> Path:
    """Where run stdout/stderr is kept when dagster.yaml gives no base_dir: HRMS_COMPUTE_LOGS_DIR, else
    Dagster's usual $DAGSTER_HOME/storage, else HRMS_HOME/compute_logs (a CLI run without DAGSTER_HOME)."""
    if os.environ.get(COMPUTE_LOGS_DIR_ENV):
        return Path(os.environ[COMPUTE_LOGS_DIR_ENV]).resolve()
    if os.environ.get("DAGSTER_HOME"):
        return (Path(os.environ["DAGSTER_HOME"]).expanduser() / "storage").resolve()
    return settings.hrms_home() / "compute_logs"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    """Create `path` 0600 (never through a symlink), or make an existing one 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class PrivateComputeLogManager(LocalComputeLogManager):
    """Dagster's local compute log manager, private: its base folder and every folder under it 0700,
    every captured file (.out, .err, the .complete marker) 0600. Dagster's own class creates them
    with the process umask (0644 in 0755 by default), readable by every local user.

    dagster.yaml:
        compute_logs:
          module: hrms_pipelines.instance
          class: PrivateComputeLogManager
          config: {base_dir: /var/lib/hrms/compute_logs}   # optional; see compute_logs_dir()
    """

    def __init__(self, base_dir: str | None = None, polling_timeout: float | None = None, inst_data=None):
        super().__init__(str(base_dir or compute_logs_dir()), polling_timeout=polling_timeout, inst_data=inst_data)
        try:
            _private_dir(Path(self._base_dir))
        except OSError:
            pass  # a read-only view of the logs (the webserver on another host): capturing will say so

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False), "polling_timeout": Field(Float, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _prepare(self, log_key: Sequence[str], extensions: Sequence[str]) -> None:
        base = Path(self._base_dir).resolve()
        _private_dir(base)
        folder = base
        for part in log_key[:-1]:
            folder = folder / part
            _private_dir(folder)
        for extension in extensions:
            _private_file(Path(self.get_captured_local_path(log_key, extension)))

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator:
        self._prepare(log_key, [IO_TYPE_EXTENSION[ComputeIOType.STDOUT], IO_TYPE_EXTENSION[ComputeIOType.STDERR]])
        with super().capture_logs(log_key) as context:
            yield context
        complete = Path(self.complete_artifact_path(log_key))
        if complete.exists():
            os.chmod(complete, 0o600)

    @contextmanager
    def open_log_stream(self, log_key: Sequence[str], io_type: ComputeIOType) -> Iterator:
        self._prepare(log_key, [IO_TYPE_EXTENSION[io_type]])
        with super().open_log_stream(log_key, io_type) as stream:
            yield stream
